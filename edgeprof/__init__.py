"""edgeprof: batch-1 LLM decode latency, measured against the memory floor."""

__version__ = "0.1.0"
