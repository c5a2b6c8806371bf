"""SlotServe's serving side: a BentoML service over a model bundle, with gRPC beside HTTP.

Nothing here imports torch or `training`; the model arrives as an exported bundle read
through `runtime.contract`. `service.app` holds the BentoML services (`bentofile.yaml` names
`service.app:SlotServe`); the other modules are plain Python, testable without a server.
"""
