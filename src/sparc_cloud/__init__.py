"""sparc-cloud: the five SPARC phases as a pipeline of cloud LLM agents."""

__version__ = "0.1.0"
