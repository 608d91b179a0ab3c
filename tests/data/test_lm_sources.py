"""Every corpus reader on a miniature in its real format (tests/fixtures/lm, and a fairseq data-bin written here from
the format's spec): the token stream is what the official fairseq pipeline makes of the text, and a damaged file is
named in one line."""

from __future__ import annotations

import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lm.pile import find_pile
from hgrn.data.lm.ptb import find_ptb, ptb_lines
from hgrn.data.lm.sources import SplitSource
from hgrn.data.lm.tokenizer import GPT2Tokenizer, gpt2_tokenizer
from hgrn.data.lm.wikitext import find_wikitext
from tests.fixtures.lm.make_fixtures import PILE_DOCS, WIKI_LINES

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lm"
WIKITEXT = FIXTURES / "wikitext103"
MMAP_MAGIC = b"MMIDIDX\x00\x00"
UINT16_CODE = 8  # fairseq's dtype code for uint16, what fairseq-preprocess picks below 65,500 symbols


@pytest.fixture(scope="module")
def tokenizer() -> GPT2Tokenizer:
    return gpt2_tokenizer()


def read_all(source: SplitSource, tokenizer: GPT2Tokenizer) -> tuple[list[int], list[int]]:
    """(the whole token stream, tokens per line or document) of one split."""
    batches = list(source.read(tokenizer))
    return np.concatenate([t for t, _ in batches]).tolist(), np.concatenate([n for _, n in batches]).tolist()


def fairseq_lines(lines: list[str], tokenizer: GPT2Tokenizer) -> list[list[int]]:
    """What multiprocessing_bpe_encoder + fairseq-preprocess make of lines, in GPT-2 ids: strip, encode, eos."""
    return [[*tokenizer.encode(line.strip()), tokenizer.eot_id] for line in lines]


def write_data_bin(folder: Path, tokenizer: GPT2Tokenizer, *, megatron: bool = False, words: bool = False) -> Path:
    """A fairseq data-bin of WIKI_LINES, written from the spec: dict.txt lists `<gpt2 id> <count>` by frequency
    (fairseq index 4 + line), with an overwritten special first and fairseq's padding symbol last; .bin holds each
    line's indices then </s> (2) as uint16; .idx is the MMIDIDX header, sizes and byte pointers (Megatron's variant
    adds a document count and doc_idx). words=True writes a word-level dictionary instead of GPT-2 ids."""
    folder.mkdir(parents=True, exist_ok=True)
    encoded = {split: [tokenizer.encode(line.strip()) for line in lines] for split, lines in WIKI_LINES.items()}
    counts = Counter(i for lines in encoded.values() for line in lines for i in line)
    ids = [i for i, _ in counts.most_common()]
    symbols = [f"w{i}" if words else str(i) for i in ids]
    dictionary = ["<unk> 1 #fairseq:overwrite", *(f"{s} {counts[i]}" for s, i in zip(symbols, ids, strict=True))]
    (folder / "dict.txt").write_text("\n".join([*dictionary, "madeupword0000 0"]) + "\n", encoding="utf-8")
    fairseq_index = {i: 4 + n for n, i in enumerate(ids)}
    for split, lines in encoded.items():
        sequences = [[fairseq_index[i] for i in line] + [2] for line in lines]
        sizes = np.array([len(s) for s in sequences], dtype="<i4")
        pointers = (np.cumsum(sizes) - sizes).astype("<i8") * 2
        header = MMAP_MAGIC + struct.pack("<QBQ", 1, UINT16_CODE, len(sizes))
        documents = np.array([0, len(sizes)], dtype="<i8")
        if megatron:
            header += struct.pack("<Q", len(documents))
        body = sizes.tobytes() + pointers.tobytes() + (documents.tobytes() if megatron else b"")
        (folder / f"{split}.idx").write_bytes(header + body)
        (folder / f"{split}.bin").write_bytes(np.array([i for s in sequences for i in s], dtype="<u2").tobytes())
    return folder


@pytest.mark.parametrize("layout", ["raw", "save_to_disk", "parquet", "fairseq", "megatron"])
def test_every_wikitext_layout_gives_the_fairseq_stream(layout, tmp_path, tokenizer):
    if layout in ("fairseq", "megatron"):
        data_dir = write_data_bin(tmp_path / layout, tokenizer, megatron=layout == "megatron")
    else:
        data_dir = WIKITEXT / layout
    sources = find_wikitext(data_dir)
    for split, lines in WIKI_LINES.items():
        expected = fairseq_lines(lines, tokenizer)
        tokens, lengths = read_all(sources[split], tokenizer)
        assert tokens == [i for line in expected for i in line]
        assert lengths == [len(line) for line in expected]  # a blank line is the eos alone
    assert lengths[0] == 1 and tokenizer.decode(tokens) == "".join(f"{line.strip()}<|endoftext|>" for line in lines)


def test_source_files_are_what_the_checksum_covers(tmp_path, tokenizer):
    assert find_wikitext(WIKITEXT / "raw")["valid"].files == (WIKITEXT / "raw" / "wiki.valid.raw",)
    assert [p.name for p in find_wikitext(WIKITEXT / "parquet")["train"].files] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    data_bin = write_data_bin(tmp_path / "bin", tokenizer)
    assert {p.name for p in find_wikitext(data_bin)["test"].files} == {"dict.txt", "test.bin", "test.idx"}
    copy = shutil.copytree(WIKITEXT / "raw", tmp_path / "copy")
    assert find_wikitext(copy)["train"].sha256() == find_wikitext(WIKITEXT / "raw")["train"].sha256()
    (copy / "wiki.train.raw").write_text("changed\n")
    assert find_wikitext(copy)["train"].sha256() != find_wikitext(WIKITEXT / "raw")["train"].sha256()


def test_the_pile_is_documents_then_eot_in_shard_order(tokenizer):
    sources = find_pile(FIXTURES / "pile")
    assert [p.name for p in sources["train"].files] == ["00.jsonl.zst", "01.jsonl"]  # two zstd frames, then plain
    for split, docs in PILE_DOCS.items():
        tokens, lengths = read_all(sources[split], tokenizer)
        expected = [[*tokenizer.encode(text), tokenizer.eot_id] for _, text in docs]  # not stripped
        assert tokens == [i for doc in expected for i in doc]
        assert lengths == [len(doc) for doc in expected]
    train, _ = read_all(sources["train"], tokenizer)
    assert train.count(tokenizer.eot_id) == len(PILE_DOCS["train"])  # a literal <|endoftext|> stays text


def test_penn_treebank_is_the_published_files(tokenizer):
    assert [sum(1 for _ in ptb_lines(split)) for split in ("train", "valid", "test")] == [42_068, 3_370, 3_761]
    valid_text = "".join(ptb_lines("valid"))
    assert len(valid_text.split()) == 70_390  # the published word count of ptb.valid.txt
    # reference/offline-data.md's 92,830 GPT-2 tokens encode the file as one string (newlines included); the
    # fairseq stream strips each line (86,474 tokens) and ends it with eos (3,370)
    assert len(tokenizer.encode(valid_text)) == 92_830
    tokens, lengths = read_all(find_ptb()["valid"], tokenizer)
    assert (len(tokens), len(lengths), tokens.count(tokenizer.eot_id)) == (86_474 + 3_370, 3_370, 3_370)
    assert tokens[: lengths[0]] == [*tokenizer.encode(valid_text.split("\n")[0].strip()), tokenizer.eot_id]


def test_no_copy_is_none_and_a_missing_split_is_named(tmp_path):
    assert find_wikitext(tmp_path) is None and find_wikitext(tmp_path / "absent") is None
    assert find_pile(tmp_path) is None
    partial = shutil.copytree(WIKITEXT / "raw", tmp_path / "raw")
    (partial / "wiki.test.raw").unlink()
    with pytest.raises(DataNotFoundError, match=r"wiki\.test\.raw.*make data-wikitext"):
        find_wikitext(partial)
    shards = shutil.copytree(FIXTURES / "pile", tmp_path / "pile")
    (shards / "test.jsonl.zst").unlink()
    with pytest.raises(DataNotFoundError, match=r"no test shards.*make data-pile"):
        find_pile(shards)


def test_damaged_files_are_named(tmp_path, tokenizer):
    shards = shutil.copytree(FIXTURES / "pile", tmp_path / "pile")
    compressed = (shards / "val.jsonl.zst").read_bytes()
    (shards / "val.jsonl.zst").write_bytes(compressed[:-6])
    with pytest.raises(MalformedDataError, match=r"val\.jsonl\.zst: damaged or truncated"):
        read_all(find_pile(shards)["valid"], tokenizer)
    (shards / "train" / "01.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(MalformedDataError, match=r"01\.jsonl:2: not JSON"):
        read_all(find_pile(shards)["train"], tokenizer)
    (shards / "train" / "01.jsonl").write_text('{"meta": {}}\n')
    with pytest.raises(MalformedDataError, match=r'01\.jsonl:1: not a record with a string "text"'):
        read_all(find_pile(shards)["train"], tokenizer)

    raw = shutil.copytree(WIKITEXT / "raw", tmp_path / "raw")
    (raw / "wiki.valid.raw").write_bytes(b" fine \n \xff\xfe broken \n")
    with pytest.raises(MalformedDataError, match=r"wiki\.valid\.raw: not UTF-8"):
        read_all(find_wikitext(raw)["valid"], tokenizer)


def test_a_data_bin_that_is_not_gpt2_bpe_or_is_damaged_is_named(tmp_path, tokenizer):
    words = write_data_bin(tmp_path / "words", tokenizer, words=True)
    with pytest.raises(MalformedDataError, match=r"train\.bin: token 1 is fairseq index \d+ \('w\d+'\).*GPT-2 BPE"):
        read_all(find_wikitext(words)["train"], tokenizer)
    data_bin = write_data_bin(tmp_path / "bin", tokenizer)
    index = (data_bin / "valid.idx").read_bytes()
    (data_bin / "valid.idx").write_bytes(index[:-3])
    with pytest.raises(MalformedDataError, match=r"valid\.idx: \d+ bytes do not fit"):
        read_all(find_wikitext(data_bin)["valid"], tokenizer)
    (data_bin / "valid.idx").write_bytes(b"TNTIDX\x00\x00" + index[8:])  # fairseq's older, non-mmap index
    with pytest.raises(MalformedDataError, match=r"valid\.idx: header"):
        read_all(find_wikitext(data_bin)["valid"], tokenizer)
    (data_bin / "dict.txt").write_text("13 850\nno-count-here\n")
    with pytest.raises(MalformedDataError, match=r"dict\.txt:2: 'no-count-here' is not `<symbol> <count>`"):
        read_all(find_wikitext(data_bin)["test"], tokenizer)
