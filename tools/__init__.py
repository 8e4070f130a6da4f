"""Developer tools: the wearable simulator (``tools.wearable_sim``)."""
