"""Jobs: large images over HTTP, asynchronously, surviving restarts (API.md, "Large images:
jobs"). store.py keeps them (SQLite under UNET_JOBS_DIR), inputs.py checks what a job is
given, runner.py runs them on the service's engine, gate.py lets /segment go first,
results.py zips a folder result on the fly."""
