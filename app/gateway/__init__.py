"""unet-dicom-gateway: a DICOM node any PACS can route to (C-ECHO, C-STORE in), a durable
queue on disk, each stable series sent to the service as one request, and its results sent
back by C-STORE or DICOMweb STOW-RS. It talks to the service over HTTP only and imports
nothing of ``app`` but its logging."""
