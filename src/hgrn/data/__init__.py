"""Data modules. Classification batches are dicts: inputs [B, T] (token ids, 0 = padding) or [B, T, C] (values),
mask [B, T] (True on real tokens), labels [B]; two-document tasks add inputs2 / mask2. Sequence-labelling and LM
batches carry labels [B, T] with -100 where there is nothing to predict."""
