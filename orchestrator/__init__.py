"""orchestrator: bulk reruns of Altostrat workflow runs, paced, retried and resumable."""

__version__ = "0.1.0"

__all__ = ["__version__"]
