"""Language-modeling data: WikiText-103, the Pile and Penn Treebank as GPT-2 BPE token streams cut into blocks.

    source reader (ptb.py, wikitext.py, fairseq.py, pile.py) -> token batches (encode.py)
      -> token cache (token_file.py: <split>.bin / .idx / .json, kept fresh by cache.py)
      -> fixed-length blocks (blocks.py) -> LMDataModule (datamodule.py)

`python -m hgrn.data.lm.prepare` fetches and tokenises ahead of a run (the `make data-*` targets). The datamodule's
config group is conf/data/lm/; this package imports no submodule, so importing it stays cheap.
"""
