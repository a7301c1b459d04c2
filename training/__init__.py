"""Training of the paper's U-Net (PyTorch): network, data, augmentation, losses, loop,
evaluation through app.inference, ONNX export. The only package that imports torch.

    python -m training {train,evaluate,export} --help
"""
