"""How the example chatbots' offline answers fare: answerable and unanswerable questions, English and Korean.

Builds both chatbots (LangChain and LlamaIndex) over a data folder (default ``examples/data``) with the
model options of the ``m3-integrations`` CLI, asks each question, and prints a Markdown table: whether
the bot quoted sentences (and from which files) or said the files do not answer, and whether that was
right. ``--show`` prints every answer in full.

Usage::

    python benchmarks/offline_answers.py --model ~/.cache/m3-models/multilingual-e5-small \\
        --allow-missing-heads --pooling mean --query-instruction "query: " --passage-instruction "passage: "
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# (language, whether examples/data answers it, question)
QUESTIONS = [
    ("en", True, "What does BGE-M3 produce?"),
    ("en", True, "What does the lexical score capture?"),
    ("en", True, "How does reciprocal rank fusion combine results?"),
    ("en", True, "How long can the inputs of BGE-M3 be?"),
    ("en", True, "Why is the multi-vector score expensive to store?"),
    ("en", True, "What does a cross-encoder reranker do?"),
    ("en", False, "What is the capital of Australia?"),
    ("en", False, "Who won the 2018 football World Cup?"),
    ("en", False, "How do I bake sourdough bread?"),
    ("en", False, "What is the boiling point of water?"),
    ("ko", True, "BGE-M3는 한국어 문서를 어떻게 처리하나요?"),
    ("ko", True, "하이브리드 검색은 어떤 점수를 함께 쓰나요?"),
    ("ko", True, "검색 증강 생성은 어떻게 답을 만드나요?"),
    ("ko", True, "교차 언어 검색이 가능한가요?"),
    ("ko", False, "호주의 수도는 어디인가요?"),
    ("ko", False, "김치는 어떻게 만드나요?"),
    ("ko", False, "2018년 월드컵 우승팀은 어디인가요?"),
    ("ko", False, "물의 끓는점은 몇 도인가요?"),
    # Written after the rule was set, to see where it breaks: paraphrases, and a question whose words
    # the notes use in another sense ("서울의 인구" is only an example query there).
    ("en", True, "Which scorer suits product codes and rare names?"),
    ("en", True, "Can a Chinese question be answered without word segmentation?"),
    ("en", False, "What is the population of Seoul?"),
    ("ko", True, "검색 결과에 출처 번호를 붙이면 무엇이 좋아지나요?"),
    ("ko", False, "서울의 인구는 몇 명인가요?"),
]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _verdict(answer: str, not_found: str) -> tuple[bool, str]:
    """Whether the bot answered, and a short description: the files it quoted, or "not found"."""
    if answer.startswith(not_found):
        return False, "not found"
    sources = answer.partition("Sources:\n")[2].splitlines()
    quotes = answer.partition("\n\nSources:")[0].count("\n") + 1
    files = sorted({line.split("] ", 1)[1] for line in sources if "] " in line})
    return True, f"{quotes} quotes: {', '.join(files)}"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(EXAMPLES))
    common = _load("_chatbot_common")
    bots = {"LangChain": _load("langchain_chatbot"), "LlamaIndex": _load("llama_index_chatbot")}
    parser = common.build_parser("offline answers", llm_help="unused")
    parser.add_argument("--show", action="store_true", help="print every answer")
    args = parser.parse_args(argv)
    log = common.open_log(quiet=True)
    documents = common.read_sources(args.data, log)
    asks = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, bot in bots.items():
            args.index_dir = str(Path(scratch) / name)
            asks[name] = bot.build_chatbot(args, log, documents)
        rows = ["| lang | notes answer it | question | " + " | ".join(bots) + " |", "|---|---|---|---|---|"]
        right = dict.fromkeys(bots, 0)
        for language, answerable, question in QUESTIONS:
            cells = []
            for name, chatbot in asks.items():
                answer = chatbot.ask(question) if hasattr(chatbot, "ask") else chatbot.chain.invoke(question)
                answered, what = _verdict(answer, common.NOT_FOUND)
                right[name] += answered == answerable
                cells.append(f"{'ok' if answered == answerable else 'WRONG'}: {what}")
                if args.show:
                    print(f"## {name}: {question}\n{answer}\n", file=sys.stderr)
            rows.append(
                f"| {language} | {'yes' if answerable else 'no'} | {question} | " + " | ".join(cells) + " |"
            )
    print("\n".join(rows))
    print("\n" + ", ".join(f"{name}: {n}/{len(QUESTIONS)} right" for name, n in right.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
