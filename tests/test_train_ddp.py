"""DistributedDataParallel on the CPU: 2 gloo processes train a tiny model and end with identical weights."""
import json
import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from test_train_loop import _cfg, _trainer

    from manipseg.train.loop import init_distributed

    dist = init_distributed("cpu")
    try:
        trainer = _trainer(_cfg(train={"steps": 3}, checkpoint={"every": 2}), os.path.join(out, "run"), dist=dist)
        result = trainer.run()
        params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        torch.save(params, os.path.join(out, f"params{rank}.pt"))
        with open(os.path.join(out, f"losses{rank}.json"), "w") as fh:
            json.dump(result.losses, fh)
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_parameters(tmp_path):
    from test_train_loop import TINY

    from manipseg.models.nets import build_network

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "params0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and len(p0) > 10
    assert all(torch.equal(p0[k], p1[k]) for k in p0)
    # training moved the weights away from the (seeded, rank-independent) initialisation
    torch.manual_seed(3)
    init = dict(build_network("compact", dropout=0.5, **TINY).named_parameters())
    assert any(not torch.equal(init[k], p0[k]) for k in p0 if "weight" in k)
    # the ranks trained on different shards of the data stream
    l0 = json.loads((tmp_path / "losses0.json").read_text())
    l1 = json.loads((tmp_path / "losses1.json").read_text())
    assert len(l0) == len(l1) == 3 and l0 != l1
    # rank 0 wrote the checkpoints (with both ranks' RNG states) and the model
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert state["world"] == 2 and len(state["rng"]) == 2
    assert (tmp_path / "run" / "model.safetensors").is_file()
