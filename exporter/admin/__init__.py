"""Administration shared by the CLI and the HTTP API (one code path for both): destinations
(`destinations`, `connection`, `removal`), exports on demand (`exports`), runs (`runs`, `views`),
the payloads (`requests`) and errors (`errors`) they share, and an operator's manual steps
(`operations`)."""
