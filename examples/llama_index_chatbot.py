"""A retrieval-augmented chatbot over a folder of .txt/.md files, with BGE-M3 hybrid search and LlamaIndex.

The first run splits the files into nodes (LlamaIndex ``SentenceSplitter``), indexes them with
:class:`m3_integrations.llama_index.M3Retriever` (dense + lexical + ColBERT) and persists the retriever
with a manifest of the files' hashes; later runs load it again and rebuild only when a file, the model
or the chunking changed.

``--llm provider:model`` names any LlamaIndex LLM whose integration package is installed
(``openai:gpt-4o-mini`` needs ``llama-index-llms-openai`` and ``OPENAI_API_KEY``,
``ollama:llama3.1`` needs ``llama-index-llms-ollama``...); it answers through LlamaIndex's
``CitationQueryEngine``, citing sources as [n]. Without one (or when it cannot be loaded or called)
the chatbot answers offline: an ``M3Reranker`` picks the retrieved sentences BGE-M3 scores highest
for the question and cites each as [n].

Usage::

    python examples/llama_index_chatbot.py --query "What does the lexical score capture?"
    python examples/llama_index_chatbot.py --llm openai:gpt-4o-mini          # interactive
    python examples/llama_index_chatbot.py --data my_notes/ --index-dir /tmp/my_index --quiet
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llama_index.core import Document
from llama_index.core.llms import LLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import NodeWithScore, TextNode

from m3_integrations import M3Model
from m3_integrations.llama_index import M3Reranker, M3Retriever

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data"
DEFAULT_INDEX_DIR = HERE / ".m3_index_llama"
SUFFIXES = (".md", ".txt")
MANIFEST = "sources.json"
RETRIEVER_DIR = "retriever"
# Sentence boundaries for Latin, Chinese/Japanese and Korean text (full-width punctuation too).
SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
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


class Console:
    """Progress on stderr (silenced by --quiet); warnings and errors always shown; answers on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def progress(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)

    def fail(self, text: str) -> None:
        print(f"error: {text}", file=sys.stderr)


# ---------------------------------------------------------------------------------------- indexing
def list_sources(folder: Path) -> list[Path]:
    if not folder.is_dir():
        msg = f"data folder {folder} does not exist"
        raise FileNotFoundError(msg)
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not found:
        msg = f"no .md or .txt files in {folder}"
        raise FileNotFoundError(msg)
    return found


def manifest_for(folder: Path, files: Sequence[Path], model: M3Model, args: argparse.Namespace) -> dict:
    """What the persisted index depends on: file hashes, model identity and chunking."""
    hashes = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return {
        "files": hashes,
        "model": model.identity,
        "chunk_size": args.chunk_size,
        "chunk_overlap": args.chunk_overlap,
    }


def read_documents(folder: Path, files: Sequence[Path]) -> list[Document]:
    documents = []
    for path in files:
        name = path.relative_to(folder).as_posix()
        documents.append(
            Document(
                id_=name,
                text=path.read_text(encoding="utf-8"),
                metadata={"source": name},
                # The file name helps the LLM cite, but is not part of what is searched.
                excluded_embed_metadata_keys=["source"],
            )
        )
    return documents


def open_retriever(args: argparse.Namespace, model: M3Model, console: Console) -> tuple[M3Retriever, bool]:
    """Reuse the persisted retriever when its manifest still matches, else build and persist a new one."""
    folder = Path(args.data).resolve()
    index_dir = Path(args.index_dir)
    files = list_sources(folder)
    manifest = manifest_for(folder, files, model, args)
    manifest_path = index_dir / MANIFEST
    if not args.rebuild and manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous == json.loads(json.dumps(manifest)):
            try:
                retriever = M3Retriever.from_persist_dir(
                    index_dir / RETRIEVER_DIR, model=model, similarity_top_k=args.k
                )
            except (OSError, ValueError) as err:
                console.warn(f"the saved index cannot be loaded ({err}); rebuilding it")
            else:
                console.progress(f"Loaded the index from {index_dir} ({len(retriever)} nodes)")
                return retriever, True
        else:
            console.progress("The files, the model or the chunking changed: rebuilding the index")

    splitter = SentenceSplitter(
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        id_func=lambda i, doc: f"{doc.id_}#{i}",  # stable node ids across rebuilds
    )
    documents = read_documents(folder, files)
    console.progress(f"Indexing {len(documents)} files from {folder} ...")
    retriever = M3Retriever.from_documents(
        documents, model=model, node_parser=splitter, similarity_top_k=args.k
    )
    retriever.persist(index_dir / RETRIEVER_DIR)
    # Written last and atomically: after a crash the manifest is missing or stale, so the next run rebuilds.
    staging = manifest_path.with_name(MANIFEST + ".tmp")
    staging.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(staging, manifest_path)
    console.progress(f"Indexed {len(retriever)} nodes; saved to {index_dir}")
    return retriever, False


# ---------------------------------------------------------------------------------------- answering
def load_llm(spec: str | None, console: Console) -> LLM | None:
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
        console.warn(f"cannot use --llm {spec} ({type(err).__name__}: {err}); answering offline")
        return None


def sources_block(nodes: Sequence[NodeWithScore]) -> str:
    return "Sources:\n" + "\n".join(
        f"[{n}] {node.node.metadata.get('source', '?')}" for n, node in enumerate(nodes, 1)
    )


def extractive_answer(question: str, nodes: Sequence[NodeWithScore], reranker: M3Reranker) -> str:
    """The sentences of the retrieved nodes that M3 scores highest for the question, each cited [n]."""
    sentences: list[NodeWithScore] = []
    for n, hit in enumerate(nodes, 1):
        for piece in SENTENCE_BOUNDARY.split(hit.node.get_content()):
            sentence = " ".join(piece.split()).lstrip("# ").strip()
            if len(sentence) > 1:
                sentences.append(NodeWithScore(node=TextNode(text=sentence, metadata={"n": n})))
    if not sentences:
        return "Nothing in the indexed files matches the question."
    best = reranker.postprocess_nodes(sentences, query_str=question)
    return "\n".join(f"{s.node.get_content()} [{s.node.metadata['n']}]" for s in best)


@dataclass
class Chatbot:
    retriever: M3Retriever
    reranker: M3Reranker
    llm: LLM | None
    reused_index: bool
    console: Console

    @property
    def llm_name(self) -> str:
        return type(self.llm).__name__ if self.llm is not None else "extractive (offline)"

    def ask(self, question: str) -> str:
        if self.llm is not None:
            try:
                return self._ask_llm(question)
            except Exception as err:  # no key, unreachable server...: still answer
                self.console.warn(f"the LLM failed ({type(err).__name__}: {err}); answering offline")
        nodes = self.retriever.retrieve(question)
        return f"{extractive_answer(question, nodes, self.reranker)}\n\n{sources_block(nodes)}"

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
        return f"{response.response}\n\n{sources_block(response.source_nodes)}"


def build_chatbot(args: argparse.Namespace, console: Console) -> Chatbot:
    model = M3Model(args.model, device=args.device, show_progress=not args.quiet)
    retriever, reused = open_retriever(args, model, console)
    reranker = M3Reranker(model=model, top_n=3)
    return Chatbot(retriever, reranker, load_llm(args.llm, console), reused, console)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of .md/.txt files")
    parser.add_argument("--index-dir", default=str(DEFAULT_INDEX_DIR), help="where the index is persisted")
    parser.add_argument("--model", default="BAAI/bge-m3", help="BGE-M3 checkpoint: hub id or folder")
    parser.add_argument("--device", default=None, help="cpu, cuda... (default: CUDA when available)")
    parser.add_argument(
        "--llm", default=None, help="provider:model, e.g. openai:gpt-4o-mini, ollama:llama3.1"
    )
    parser.add_argument("--query", default=None, help="answer this question and exit")
    parser.add_argument("-k", type=int, default=4, help="nodes retrieved per question")
    parser.add_argument("--chunk-size", type=int, default=160, help="tokens per node (SentenceSplitter)")
    parser.add_argument("--chunk-overlap", type=int, default=20, help="tokens shared by neighbouring nodes")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even when it is current")
    parser.add_argument("--quiet", action="store_true", help="print only the answers")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(quiet=args.quiet)
    if args.quiet:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if args.query is not None and not args.query.strip():
        console.fail("--query is empty")
        return 2
    try:
        bot = build_chatbot(args, console)
    except FileNotFoundError as err:
        console.fail(str(err))
        return 2
    console.progress(f"LLM: {bot.llm_name}")
    if args.query is not None:
        print(bot.ask(args.query))
        return 0
    print("Ask about the indexed files (empty line or Ctrl-D quits).")
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            break
        if not question or question.lower() in {"exit", "quit"}:
            break
        print(bot.ask(question), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
