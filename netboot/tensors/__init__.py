"""GROUND: a weight tensor as it lies in the file: GGML type ids and block sizes (`ggml`), and `QTensor`, the
block bytes of one tensor with its shape (`qtensor`), and `Matrix`, what every weight matrix answers wherever its
bytes lie (`matrix`). Nothing here computes: the backends do."""
