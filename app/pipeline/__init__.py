"""One way from an input to its outputs, shared by POST /segment, jobs and unet-segment:
small.py (in memory: decode, predict, encode), large.py (block by block, disk to disk),
objects.py and geojson.py (objects of images beyond memory), dask.py (the same blocks as
Dask tasks), batch.py (what one input of a batch runs, and the settings it runs with),
files.py (inputs of folders and globs, output names, atomic writes). No web framework."""
