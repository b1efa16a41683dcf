"""A retrieval-augmented chatbot over a folder of documents, with BGE-M3 hybrid search and LlamaIndex.

The first run reads the files with the package's reader (.txt, .md, .rst, .jsonl; .pdf, .html and .docx
with ``pip install "m3-integrations[documents]"``), cuts them into chunks of ``--chunk-tokens`` tokens
with the package's ``Chunker``, turns the chunks into ``TextNode`` objects (offsets and source kept, out of
what is embedded), indexes them with :class:`m3_integrations.llama_index.M3Retriever` (dense + lexical
+ ColBERT) and persists the retriever with a manifest of the documents; later runs load it again and
rebuild only when a document, the model or the chunking changed.

``--llm provider:model`` names any LlamaIndex LLM whose integration package is installed
(``openai:gpt-4o-mini`` needs ``llama-index-llms-openai`` and ``OPENAI_API_KEY``,
``ollama:llama3.1`` needs ``llama-index-llms-ollama``...); it answers through LlamaIndex's
``CitationQueryEngine``, citing sources as [n]. Without one (or when it cannot be loaded or called)
the chatbot answers offline: an ``M3Reranker`` picks the retrieved sentences the encoder scores highest
for the question and cites each passage as [n], or it says that the files do not answer when no
passage holds most of the question's words (see ``_chatbot_common``).

Usage::

    python examples/llama_index_chatbot.py --query "What does the lexical score capture?"
    python examples/llama_index_chatbot.py --llm openai:gpt-4o-mini          # interactive
    python examples/llama_index_chatbot.py --data my_notes/ --index-dir /tmp/my_index --quiet
    python examples/llama_index_chatbot.py --model ~/models/multilingual-e5-small --allow-missing-heads \
        --pooling mean --query-instruction "query: " --passage-instruction "passage: "   # a non-M3 encoder

The model options (``--model``, ``--allow-missing-heads``, ``--pooling``, ``--query-instruction``,
``--passage-instruction``, ``--device``...) are those of the ``m3-integrations`` command line; every
option is checked before the model loads.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llama_index.core.llms import LLM
from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

from m3_integrations import M3Model
from m3_integrations.llama_index import M3Reranker, M3Retriever

HERE = Path(__file__).resolve().parent
# Run as a script, examples/ is already on the path; the tests load this file by its path instead.
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))
import _chatbot_common as common  # noqa: E402

from m3_integrations.chunking import Chunk  # noqa: E402
from m3_integrations.documents import SourceDocument  # noqa: E402

DEFAULT_INDEX_DIR = HERE / ".m3_index_llama"
RETRIEVER_DIR = "retriever"
# provider -> (integration module, LLM class, keyword naming the model) for the common providers;
# any other provider is looked up as llama_index.llms.<provider>.
KNOWN_LLMS = {
    "openai": ("llama_index.llms.openai", "OpenAI", "model"),
    "anthropic": ("llama_index.llms.anthropic", "Anthropic", "model"),
    "ollama": ("llama_index.llms.ollama", "Ollama", "model"),
    "gemini": ("llama_index.llms.google_genai", "GoogleGenAI", "model"),
    "mistral": ("llama_index.llms.mistralai", "MistralAI", "model"),
    "groq": ("llama_index.llms.groq", "Groq", "model"),
    "huggingface": ("llama_index.llms.huggingface", "HuggingFaceLLM", "model_name"),
    "mock": ("llama_index.core.llms", "MockLLM", None),
}


# ---------------------------------------------------------------------------------------- indexing
# Where a chunk lies in its document: kept on the node, but neither embedded nor shown to an LLM.
POSITION_KEYS = ["source", "source_id", "chunk_index", "start", "end", "num_tokens"]


def to_nodes(chunks: Sequence[Chunk]) -> list[TextNode]:
    """LlamaIndex nodes from the package's chunks: id ``source#i``, offsets, and the source document."""
    return [
        TextNode(
            id_=c.id,
            text=c.text,
            metadata=c.metadata,
            start_char_idx=c.start,
            end_char_idx=c.end,
            # Only the text is embedded, as in the other chatbot and the CLI.
            excluded_embed_metadata_keys=list(c.metadata),
            excluded_llm_metadata_keys=[key for key in POSITION_KEYS if key in c.metadata],
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=c.source_id)},
        )
        for c in chunks
    ]


def open_retriever(
    args: argparse.Namespace, model: M3Model, documents: Sequence[SourceDocument], log: common.Log
) -> tuple[M3Retriever, bool]:
    """Reuse the persisted retriever when its manifest still matches, else build and persist a new one."""
    index_dir = Path(args.index_dir)
    chunker = common.make_chunker(model, args)
    manifest = common.build_manifest(documents, model.identity, chunker)
    manifest_path = index_dir / common.MANIFEST
    if not args.rebuild and manifest_path.is_file():
        if common.manifest_matches(manifest_path, manifest):
            try:
                retriever = M3Retriever.from_persist_dir(
                    index_dir / RETRIEVER_DIR, model=model, similarity_top_k=args.k
                )
            except (OSError, ValueError) as err:
                log.warning(f"the saved index cannot be loaded ({err}); rebuilding it")
            else:
                log.info(f"Loaded the index from {index_dir} ({len(retriever)} nodes)")
                return retriever, True
        else:
            log.info("The files, the model or the chunking changed: rebuilding the index")

    chunks = common.split(chunker, documents, log)
    log.info(f"Indexing {len(documents)} documents from {args.data} ...")
    retriever = M3Retriever(
        nodes=to_nodes(chunks),
        model=model,
        similarity_top_k=args.k,
        index_kwargs={"show_progress": not args.quiet},
    )
    retriever.persist(index_dir / RETRIEVER_DIR)
    common.save_manifest(manifest_path, manifest)
    log.info(f"Indexed {len(retriever)} nodes; saved to {index_dir}")
    return retriever, False


# ---------------------------------------------------------------------------------------- answering
def load_llm(spec: str | None, log: common.Log) -> LLM | None:
    """The LLM named ``provider:model``, or ``None`` when its package or credentials are missing."""
    if not spec:
        return None
    provider, _, model_name = spec.partition(":")
    provider = provider.strip().lower()
    module_name, class_name, model_kw = KNOWN_LLMS.get(
        provider, (f"llama_index.llms.{provider}", None, "model")
    )
    try:
        module = importlib.import_module(module_name)
        if class_name is None:  # an unlisted provider: the module's one LLM class
            candidates = [
                obj for _, obj in inspect.getmembers(module, inspect.isclass) if issubclass(obj, LLM)
            ]
            if not candidates:
                msg = f"{module_name} has no LLM class"
                raise ImportError(msg)
            llm_class = candidates[0]
        else:
            llm_class = getattr(module, class_name)
        kwargs = {model_kw: model_name} if model_kw and model_name else {}
        return llm_class(**kwargs)
    except Exception as err:  # missing package, missing API key, bad model name...
        log.warning(f"cannot use --llm {spec} ({type(err).__name__}: {err}); answering offline")
        return None


def node_sources(nodes: Sequence[NodeWithScore]) -> str:
    return common.sources_block(common.source_label(hit.node.metadata) for hit in nodes)


def extractive_answer(question: str, nodes: Sequence[NodeWithScore], reranker: M3Reranker) -> str:
    """The sentences of the retrieved nodes that M3 scores highest for the question, each cited [n].

    Or that the files do not say, when no node holds most of the question's words.
    """

    def rank(query: str, sentences: list[str]) -> list[int]:
        as_nodes = [
            NodeWithScore(
                node=TextNode(
                    text=sentence,
                    metadata={"i": i},
                    excluded_embed_metadata_keys=["i"],
                    excluded_llm_metadata_keys=["i"],
                )
            )
            for i, sentence in enumerate(sentences)
        ]
        return [hit.node.metadata["i"] for hit in reranker.postprocess_nodes(as_nodes, query_str=query)]

    passages = [
        common.Passage(hit.node.get_content(), common.source_label(hit.node.metadata)) for hit in nodes
    ]
    return common.extractive_answer(question, passages, rank).render()


@dataclass
class Chatbot:
    retriever: M3Retriever
    reranker: M3Reranker
    llm: LLM | None
    reused_index: bool
    log: common.Log

    @property
    def llm_name(self) -> str:
        return type(self.llm).__name__ if self.llm is not None else "extractive (offline)"

    def ask(self, question: str) -> str:
        if self.llm is not None:
            try:
                return self._ask_llm(question)
            except Exception as err:  # no key, unreachable server...: still answer
                self.log.warning(f"the LLM failed ({type(err).__name__}: {err}); answering offline")
        return extractive_answer(question, self.retriever.retrieve(question), self.reranker)

    def _ask_llm(self, question: str) -> str:
        from llama_index.core import get_response_synthesizer
        from llama_index.core.query_engine import CitationQueryEngine
        from llama_index.core.query_engine.citation_query_engine import (
            CITATION_QA_TEMPLATE,
            CITATION_REFINE_TEMPLATE,
        )

        engine = CitationQueryEngine(
            self.retriever,
            llm=self.llm,
            response_synthesizer=get_response_synthesizer(
                llm=self.llm, text_qa_template=CITATION_QA_TEMPLATE, refine_template=CITATION_REFINE_TEMPLATE
            ),
        )
        response = engine.query(question)
        return f"{response.response}\n\n{node_sources(response.source_nodes)}"


def build_chatbot(args: argparse.Namespace, log: common.Log, documents: Sequence[SourceDocument]) -> Chatbot:
    model = common.open_model(args)
    retriever, reused = open_retriever(args, model, documents, log)
    reranker = M3Reranker(model=model, top_n=common.MAX_QUOTED_SENTENCES)
    return Chatbot(retriever, reranker, load_llm(args.llm, log), reused, log)


def build_parser() -> argparse.ArgumentParser:
    description = __doc__.split("\n\n")[0]
    parser = common.build_parser(
        description, llm_help="provider:model, e.g. openai:gpt-4o-mini, ollama:llama3.1"
    )
    parser.set_defaults(index_dir=str(DEFAULT_INDEX_DIR))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def start(
        args: argparse.Namespace, log: common.Log, documents: list[SourceDocument]
    ) -> tuple[Callable[[str], str], str]:
        bot = build_chatbot(args, log, documents)
        return bot.ask, bot.llm_name

    greeting = "Ask about the indexed files (empty line or Ctrl-D quits)."
    return common.run(build_parser(), argv, start, greeting)


if __name__ == "__main__":
    sys.exit(main())
