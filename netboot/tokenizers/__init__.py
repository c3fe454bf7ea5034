"""Tokenizers: text to token ids and back, for every model file netboot reads.

- ``base``: the ``Tokenizer`` and ``StreamDecoder`` protocols every tokenizer offers
- ``spm``: ``SPMTokenizer``, llama.cpp's SPM tokenizer over a GGUF vocabulary
- ``llama2c``: ``Llama2cTokenizer``, run.c's ``tokenizer.bin``
- ``hf``: ``HFTokenizer``, Hugging Face ``tokenizer.json`` through the ``tokenizers`` library
- ``special``: llama.cpp's special tokens: attributes, recognised texts, end-of-generation set, partitioning
- ``merges``: score-driven pair merging shared by the SPM and llama2.c tokenizers
- ``streams``: the incremental decoders behind ``stream_decoder()``
- ``vocabulary``: the compact text -> id index of a vocabulary
"""
