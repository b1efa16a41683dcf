"""m3-integrations: BGE-M3 dense, lexical and ColBERT retrieval for LangChain and LlamaIndex.

Example:
    .. code-block:: python

        from m3_integrations import M3Model

        model = M3Model("BAAI/bge-m3")
        out = model.encode(["BGE-M3 yields three representations."], return_colbert=True)
"""

from __future__ import annotations

import logging

from m3_integrations.model import M3Model, M3Output

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = ["M3Model", "M3Output", "__version__"]
