"""HAT's roles' building blocks: the adapter's prepare step, the cloud's bounded sessions over
the bus, and the device's OpenAI-compatible endpoint. The ``HatInferenceService`` kind that will
run them as roles is not built yet (``docs/systems/hat.md``)."""
