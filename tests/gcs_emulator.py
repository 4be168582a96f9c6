"""A local Google Cloud Storage server for tests: `python tests/gcs_emulator.py PORT BUCKET`.

It is gcp-storage-emulator (pure Python, from PyPI; in memory), with one gap filled: real GCS
answers every object download with an `x-goog-generation` header, which the emulator leaves out.
tensorstore (orbax's array writer) takes an object's generation from that header and conditions
its next write of the object on it (the OCDBT manifest of a checkpoint), so without it the
second write of a manifest fails with "Malformed StorageGeneration".
"""

import logging
import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    if response.status in (200, 206):
        meta = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = meta["generation"]
        response["x-goog-metageneration"] = meta["metageneration"]


objects.download = _download_with_generation  # before the server module binds its routes

from gcp_storage_emulator.server import create_server  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)  # not a line per request
    port, bucket = int(sys.argv[1]), sys.argv[2]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.run()
