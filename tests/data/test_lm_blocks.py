"""Tokenisation and packing end to end through LMDataModule: blocks decode back to the text, every token is a label
exactly once across block boundaries, and DDP ranks split the training blocks without overlap."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hgrn.config import compose
from hgrn.data import sampler
from hgrn.data.lm.blocks import IGNORE_INDEX, TokenBlocks
from hgrn.data.lm.datamodule import LMDataModule
from hgrn.data.lm.tokenizer import PADDED_VOCAB_SIZE, gpt2_tokenizer
from hgrn.data.spec import data_spec
from hgrn.training.build import build_datamodule
from tests.fixtures.lm.make_fixtures import WIKI_LINES

WIKITEXT_RAW = Path(__file__).parents[1] / "fixtures" / "lm" / "wikitext103" / "raw"
BLOCK = 8


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory: pytest.TempPathFactory) -> LMDataModule:
    module = LMDataModule("wikitext103", WIKITEXT_RAW, BLOCK, 4, cache_dir=tmp_path_factory.mktemp("cache"))
    module.prepare_data()
    module.setup()
    return module


def expected_text(split: str) -> str:
    """The split as the fairseq pipeline sees it: every line stripped, then the end-of-sentence token."""
    return "".join(f"{line.strip()}<|endoftext|>" for line in WIKI_LINES[split])


def stacked(module: LMDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    blocks = [module.blocks[split][i] for i in range(len(module.blocks[split]))]
    return torch.stack([b["inputs"] for b in blocks]), torch.stack([b["labels"] for b in blocks])


@pytest.mark.parametrize("split", ["valid", "test"])
def test_evaluation_blocks_predict_every_token_once_and_decode_to_the_text(wikitext, split):
    stream = wikitext.tokens(split).astype(np.int64).tolist()
    assert gpt2_tokenizer().decode(stream) == expected_text(split)
    inputs, labels = stacked(wikitext, split)
    assert inputs.shape == (-(-(len(stream) - 1) // BLOCK), BLOCK)  # the partial last block is kept
    assert labels[labels != IGNORE_INDEX].tolist() == stream[1:]  # each token after the first, once, in order
    assert inputs.flatten()[: len(stream) - 1].tolist() == stream[:-1]
    assert (labels[:-1, -1] == inputs[1:, 0]).all()  # a block's last label is the next block's first input
    padding = labels == IGNORE_INDEX
    assert padding.sum() == inputs.numel() - (len(stream) - 1) and padding[:-1].sum() == 0
    assert (inputs[padding] == gpt2_tokenizer().eot_id).all()


def test_training_blocks_drop_only_the_partial_tail(wikitext):
    stream = wikitext.tokens("train").astype(np.int64).tolist()
    inputs, labels = stacked(wikitext, "train")
    assert len(inputs) == (len(stream) - 1) // BLOCK and (labels != IGNORE_INDEX).all()
    assert labels.flatten().tolist() == stream[1 : 1 + labels.numel()]
    assert inputs.flatten().tolist() == stream[: inputs.numel()]


def test_loaders_serve_int64_batches_of_blocks(wikitext):
    batch = next(iter(wikitext.train_dataloader()))
    assert set(batch) == {"inputs", "labels"}
    assert batch["inputs"].dtype == batch["labels"].dtype == torch.int64 and batch["inputs"].shape == (4, BLOCK)
    served = torch.cat([b["labels"] for b in wikitext.val_dataloader()])
    assert torch.equal(served, stacked(wikitext, "valid")[1])  # validation: every block, in order


@pytest.mark.parametrize("epoch", [0, 1])
def test_ddp_ranks_split_the_training_blocks(wikitext, monkeypatch, epoch):
    shards = []
    for rank in range(2):
        monkeypatch.setattr(sampler, "distributed_position", lambda rank=rank: (rank, 2))
        loader = wikitext.train_dataloader()
        loader.shard.set_epoch(epoch)
        shards.append(list(loader.shard))
        first = next(iter(loader))
        expected = torch.stack([wikitext.blocks["train"][i]["inputs"] for i in loader.shard.batches()[0]])
        assert torch.equal(first["inputs"], expected)
    assert not set(shards[0]) & set(shards[1])
    assert sorted(itertools.chain(*shards)) == list(range(len(wikitext.blocks["train"])))


def test_what_the_model_reads_off_the_data(wikitext):
    assert data_spec(wikitext) == {"vocab_size": PADDED_VOCAB_SIZE, "max_length": BLOCK}
    assert (
        wikitext.tokens("val").tolist() == wikitext.tokens("validation").tolist() == wikitext.tokens("valid").tolist()
    )
    assert isinstance(wikitext.tokens("test"), np.memmap) and wikitext.tokens("test").dtype == np.uint16
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        wikitext.tokens("dev")


def test_token_limits_cut_the_streams(wikitext):
    module = LMDataModule(
        "wikitext103", WIKITEXT_RAW, BLOCK, 2, cache_dir=wikitext.cache_dir, max_train_tokens=33, max_eval_tokens=10
    )
    module.setup()
    assert len(module.blocks["train"]) == 32 // BLOCK and len(module.blocks["valid"]) == 2  # 9 labels: 8 + 1
    tiny = LMDataModule("wikitext103", WIKITEXT_RAW, BLOCK, 2, cache_dir=wikitext.cache_dir, max_train_tokens=BLOCK)
    with pytest.raises(ValueError, match="train split gives 8 tokens, too few for one block of 8"):
        tiny.setup()


def test_blocks_pickle_without_their_tokens(wikitext):
    blocks = wikitext.blocks["valid"]
    _ = blocks[0]  # maps the file
    copy = pickle.loads(pickle.dumps(blocks))
    assert copy._tokens is None and torch.equal(copy[1]["labels"], blocks[1]["labels"])
    with pytest.raises(IndexError):
        blocks[len(blocks)]


def test_bad_arguments_are_one_line():
    with pytest.raises(ValueError, match="unknown corpus 'wikitext2'; choose one of ptb, wikitext103, pile"):
        LMDataModule("wikitext2", "data", 512, 8)
    with pytest.raises(ValueError, match="block_size and batch_size must be at least 1"):
        LMDataModule("ptb", "data", 0, 8)
    with pytest.raises(ValueError, match="vocab_size 50000 is smaller than GPT-2's 50257"):
        LMDataModule("ptb", "data", 512, 8, vocab_size=50000)
    with pytest.raises(ValueError, match="block_size"):
        TokenBlocks(Path("unused.bin"), 10, 0, keep_partial=True, pad_id=0)


@pytest.mark.parametrize(("name", "block_size"), [("ptb", 512), ("wikitext103", 512), ("pile", 2048)])
def test_configs_build_the_datamodule(name, block_size, tmp_path):
    cfg = compose(f"data=lm/{name}", f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}")
    module = build_datamodule(cfg)
    assert isinstance(module, LMDataModule) and module.max_length == block_size
    assert module.data_dir == tmp_path / "lm" / name and module.cache_dir == tmp_path / "lm" / name / "cache"


def test_ptb_needs_no_data_dir_content(tmp_path):
    module = LMDataModule("ptb", tmp_path / "ptb", 512, 8, max_eval_tokens=2000)
    module.prepare_data()
    module.setup()
    assert [p.name for p in (tmp_path / "ptb").iterdir()] == ["cache"]  # the text itself comes from the package
    assert len(module.blocks["valid"]) == -(-1999 // 512)
    assert len(module.tokens("train")) == 1_094_404 + 42_068  # stripped lines, and an eos for each
    assert module.tokens("train")[-1] == gpt2_tokenizer().eot_id
