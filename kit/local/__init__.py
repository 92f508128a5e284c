"""Running contracts locally: the WapoJS-faithful runtime, the gateway, its vault, the stand-in LLM, watch."""
