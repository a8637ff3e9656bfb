"""An in-browser explorer for a generator: ONNX export, a static page bundle and its server.

``ganops explore RUN_DIR|models:/NAME@ALIAS`` exports the generator (checked against PyTorch),
writes the bundle (page + onnxruntime-web + model + explorer.json) and serves it on 127.0.0.1.
The page breeds, interpolates and steers latent generators and translates images with
image-to-image ones, all in the browser; its state lives in the URL.

Modules: ``onnx_export`` (export and check), ``bundle`` (the page bundle), ``server`` (HTTP),
``cli`` (the command). Nothing is imported here, so mounting the command costs no torch import.
"""
