"""A process that saves indexes on command, for the crash and concurrent-reader tests.

Run as ``python -m tests.persistence_writer CHECKPOINT FIRST SECOND``. It loads the model and the two
saved indexes once, prints ``ready``, then answers lines on stdin:

- ``go TARGET``: fork a writer that saves FIRST, SECOND, FIRST, ... to TARGET until it is killed; print
  its pid;
- ``grow TARGET``: fork a writer that loads TARGET and grows it until killed, saving after each step
  (incremental saves, and a whole save whenever the deleted rows or the segments pile up): step ``i``
  adds ``g{i}``, and when ``i % 5 == 4`` deletes ``g{i-4}``..``g{i-2}`` (:func:`grown_ids`); print its pid;
- ``reap PID``: wait for that writer (after the test killed it) and print ``reaped``;
- ``quit``: exit.

Forking keeps the start-up (torch, the model) out of each of the many writers the tests kill.
"""

from __future__ import annotations

import os
import sys
import traceback


def main(checkpoint: str, first: str, second: str) -> None:
    """Serve ``go`` / ``reap`` / ``quit`` commands (see the module docstring)."""
    import torch

    from m3_integrations import M3Index, M3Model

    torch.set_num_threads(1)
    model = M3Model(checkpoint, device="cpu")
    indexes = [M3Index.load(first, model=model), M3Index.load(second, model=model)]
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "go":
            pid = os.fork()
            if pid == 0:  # the writer: save until killed
                try:
                    turn = 0
                    while True:
                        indexes[turn % 2].save(args[0])
                        turn += 1
                except BaseException:  # a save that fails is what the test looks for: report it
                    traceback.print_exc()
                    sys.stderr.flush()
                    os._exit(3)
            print(pid, flush=True)
        elif command == "grow":
            pid = os.fork()
            if pid == 0:
                try:
                    index = M3Index.load(args[0], model=model)
                    grown = [int(doc_id[1:]) for doc_id in index.ids if doc_id.startswith("g")]
                    step = max(grown, default=-1) + 1
                    while True:
                        index.add([f"grown document number {step}"], ids=[f"g{step}"])
                        if step % 5 == 4:
                            index.delete([f"g{j}" for j in range(step - 4, step - 1)])
                        index.save(args[0])
                        step += 1
                except BaseException:
                    traceback.print_exc()
                    sys.stderr.flush()
                    os._exit(3)
            print(pid, flush=True)
        elif command == "reap":
            _, status = os.waitpid(int(args[0]), 0)
            print("reaped", os.waitstatus_to_exitcode(status), flush=True)
        elif command == "quit":
            return


def grown_ids(base: list[str], step: int) -> list[str]:
    """The live ids after a ``grow`` writer's step ``step`` (``base`` and what the steps left)."""
    grown = [f"g{j}" for j in range(step + 1) if not (j % 5 in (0, 1, 2) and j - j % 5 + 4 <= step)]
    return [*base, *grown]


if __name__ == "__main__":
    main(*sys.argv[1:4])
