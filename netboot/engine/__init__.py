"""ENGINE: generation on a model: sampling (`sampling`), stop strings (`stops`), one request's token loop
(`generate`)."""
