"""Ray Serve service: embed a tile and find analogue regions over HTTP, as GeoJSON.

``build_app(ServeArgs) -> Application`` lives in :mod:`antssl.serve.app`, so both
``serve run antssl.serve.app:build_app config=…`` and a RayService
``import_path: antssl.serve.app:build_app`` work.
"""
