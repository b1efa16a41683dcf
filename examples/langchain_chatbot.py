"""A retrieval-augmented chatbot over a folder of documents, with BGE-M3 hybrid search and LangChain.

The first run reads the files with the package's reader (.txt, .md, .rst, .jsonl; .pdf, .html and .docx
with ``pip install "m3-integrations[documents]"``), cuts them into chunks of ``--chunk-tokens`` tokens
with the package's ``Chunker``, indexes them with :class:`M3Retriever` (dense + lexical + ColBERT) and
saves the index next to a manifest of the documents; later runs load it again and rebuild only when a
document, the model or the chunking changed.

Answers come from an LCEL chain ``retriever | format_docs | prompt | llm``. ``--llm`` names any LangChain
chat model that ``init_chat_model`` knows (``openai:gpt-4o-mini``, ``ollama:llama3.1``...), used when its
package and credentials are present. Without one, the chatbot answers offline: it quotes the sentences of
the retrieved passages that the encoder scores highest, citing each passage as [n], or says that the
files do not answer when no passage holds most of the question's words (see ``_chatbot_common``).

Usage::

    python examples/langchain_chatbot.py --query "What does the lexical score capture?"
    python examples/langchain_chatbot.py --llm openai:gpt-4o-mini          # interactive
    python examples/langchain_chatbot.py --data my_notes/ --index-dir /tmp/my_index --quiet
    python examples/langchain_chatbot.py --model ~/models/multilingual-e5-small --allow-missing-heads \
        --pooling mean --query-instruction "query: " --passage-instruction "passage: "   # a non-M3 encoder

The model options (``--model``, ``--allow-missing-heads``, ``--pooling``, ``--query-instruction``,
``--passage-instruction``, ``--device``...) are those of the ``m3-integrations`` command line; every
option is checked before the model loads.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough

from m3_integrations import M3Model, M3ScoreReranker
from m3_integrations.langchain import M3Retriever

HERE = Path(__file__).resolve().parent
# Run as a script, examples/ is already on the path; the tests load this file by its path instead.
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))
# Log by name too: callers of load_llm and build_chatbot (the tests among them) take it from here.
import _chatbot_common as common  # noqa: E402
from _chatbot_common import Log  # noqa: E402

from m3_integrations.chunking import Chunk  # noqa: E402
from m3_integrations.documents import SourceDocument  # noqa: E402

DEFAULT_INDEX_DIR = HERE / ".m3_index_langchain"

PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Answer the question using only the numbered context passages. Cite the passages you use as "
            "[n]. If the context does not contain the answer, say so.",
        ),
        ("human", "Context:\n{context}\n\nQuestion: {question}"),
    ]
)


@dataclass
class Chatbot:
    retriever: M3Retriever
    chain: Runnable
    reused_index: bool
    llm_name: str


def to_documents(chunks: Sequence[Chunk]) -> list[Document]:
    """LangChain documents from the package's chunks: id ``source#i``, metadata with ``source_id``."""
    return [Document(page_content=c.text, metadata=c.metadata, id=c.id) for c in chunks]


def load_or_build_retriever(
    args: argparse.Namespace, model: M3Model, documents: Sequence[SourceDocument], log: Log
) -> tuple[M3Retriever, bool]:
    """Load the saved index when its manifest matches the documents, else rebuild and save it."""
    index_dir = Path(args.index_dir)
    chunker = common.make_chunker(model, args)
    manifest = common.build_manifest(documents, model.identity, chunker)
    manifest_path = index_dir / common.MANIFEST
    search = {"k": args.k}
    if not args.rebuild and manifest_path.is_file():
        if common.manifest_matches(manifest_path, manifest):
            try:
                retriever = M3Retriever.load(index_dir / "index", model=model, **search)
            except (OSError, ValueError) as err:
                log.warning(f"could not load the saved index ({err}); rebuilding")
            else:
                log.info(f"Reusing the index in {index_dir} ({len(retriever.index)} chunks)")
                return retriever, True
        else:
            log.info("Files, model or chunking changed since the index was built: rebuilding")

    chunks = common.split(chunker, documents, log)
    log.info(f"Indexing {len(chunks)} chunks from {args.data} ...")
    retriever = M3Retriever.from_documents(
        to_documents(chunks), model=model, index_kwargs={"show_progress": not args.quiet}, **search
    )
    retriever.save(index_dir / "index")
    common.save_manifest(manifest_path, manifest)
    log.info(f"Saved the index to {index_dir}")
    return retriever, False


def format_docs(docs: Sequence[Document]) -> str:
    """Number the passages so that the answer can cite them as [n]."""
    return "\n\n".join(
        f"[{n}] ({common.source_label(doc.metadata)}) {doc.page_content}" for n, doc in enumerate(docs, 1)
    )


def doc_sources(docs: Sequence[Document]) -> str:
    return common.sources_block(common.source_label(doc.metadata) for doc in docs)


def make_extractive_answer(model: M3Model) -> RunnableLambda:
    """An offline 'LLM': the sentences of the retrieved passages that M3 scores highest, with [n].

    Returns the rendered answer with the sources it quotes, or that the files do not say.
    """
    reranker = M3ScoreReranker(model)

    def rank(question: str, sentences: list[str]) -> list[int]:
        return [i for i, _ in reranker.rerank(question, sentences, top_n=common.MAX_QUOTED_SENTENCES)]

    def answer(inputs: dict[str, Any]) -> str:
        passages = [
            common.Passage(doc.page_content, common.source_label(doc.metadata)) for doc in inputs["docs"]
        ]
        return common.extractive_answer(inputs["question"], passages, rank).render()

    return RunnableLambda(answer, name="extractive_answer")


def load_llm(spec: str | None, log: Log) -> BaseChatModel | None:
    """The chat model named by ``spec``, or ``None`` when its package or credentials are missing."""
    if not spec:
        return None
    try:
        try:
            from langchain.chat_models import init_chat_model
        except ImportError:  # langchain-classic keeps the same function (with a deprecation warning)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                from langchain_classic.chat_models import init_chat_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return init_chat_model(spec)
    except Exception as err:  # missing provider package, missing API key, unknown provider...
        log.warning(f"cannot use --llm {spec} ({err}); answering offline (extractive)")
        return None


def build_chain(retriever: M3Retriever, model: M3Model, llm: BaseChatModel | None) -> Runnable:
    """``question -> answer with sources`` as one LCEL chain.

    An LLM sees every retrieved passage, numbered, and the sources list them all; the offline answer
    lists the passages it quotes.
    """
    retrieve = RunnableParallel(docs=retriever, question=RunnablePassthrough())
    if llm is None:
        return retrieve | make_extractive_answer(model)
    to_prompt = RunnableLambda(
        lambda x: {"context": format_docs(x["docs"]), "question": x["question"]}, name="format_docs"
    )
    answer = to_prompt | PROMPT | llm | StrOutputParser()
    render = RunnableLambda(lambda x: f"{x['answer']}\n\n{doc_sources(x['docs'])}", name="render")
    return retrieve | RunnablePassthrough.assign(answer=answer) | render


def build_chatbot(args: argparse.Namespace, log: Log, documents: Sequence[SourceDocument]) -> Chatbot:
    model = common.open_model(args)
    retriever, reused = load_or_build_retriever(args, model, documents, log)
    llm = load_llm(args.llm, log)
    chain = build_chain(retriever, model, llm)
    return Chatbot(retriever, chain, reused, args.llm if llm is not None else "extractive (offline)")


def build_parser() -> argparse.ArgumentParser:
    description = __doc__.split("\n\n")[0]
    parser = common.build_parser(description, llm_help="init_chat_model spec, e.g. openai:gpt-4o-mini")
    parser.set_defaults(index_dir=str(DEFAULT_INDEX_DIR))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def start(args: argparse.Namespace, log: Log, documents: list[SourceDocument]) -> tuple[Any, str]:
        bot = build_chatbot(args, log, documents)
        return bot.chain.invoke, bot.llm_name

    greeting = "Ask a question about the indexed files (empty line or Ctrl-D to quit)."
    return common.run(build_parser(), argv, start, greeting)


if __name__ == "__main__":
    sys.exit(main())
