"""Serve the browser demo (``web/``) with a stream-mode ONNX file: ``python src/serve_demo.py onnx=PATH``.

The page runs the file in onnxruntime-web (WebAssembly), frame by frame from the camera or a video file;
this server only hands out files (:mod:`tsm.streaming.demo_server`). Build the page once first:
``npm install --prefix web``.
"""

import hydra
from omegaconf import DictConfig

from tsm.streaming.demo_server import MODEL_URL, demo_server


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve_demo")
def main(cfg: DictConfig) -> None:
    server = demo_server(cfg.onnx, cfg.host, cfg.port)
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    query = f"?model={MODEL_URL.lstrip('/')}" + ("&source=camera" if cfg.camera else "")
    print(f"TSM browser demo: http://{host}:{port}/{query}  (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
