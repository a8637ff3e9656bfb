"""An in-browser explorer for a generator: ONNX export, a static page bundle and its server.

``ganops explore RUN_DIR|models:/NAME@ALIAS`` exports the generator (checked against PyTorch),
writes the bundle (page + onnxruntime-web + model + explorer.json) and serves it on 127.0.0.1.
The page breeds, interpolates and steers latent generators and translates images with
image-to-image ones, all in the browser; its state lives in the URL.
"""

from gan_models.explore.bundle import bundle_size, write_bundle
from gan_models.explore.onnx_export import TOLERANCE, export_onnx
from gan_models.explore.server import make_server

__all__ = ["TOLERANCE", "bundle_size", "export_onnx", "make_server", "write_bundle"]
