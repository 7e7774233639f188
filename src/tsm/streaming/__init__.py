"""Online TSM: the streaming model (PyTorch), its onnxruntime runner and the camera/video app.

``runtime`` and ``app`` import neither PyTorch nor timm, so this package imports nothing eagerly.
"""
