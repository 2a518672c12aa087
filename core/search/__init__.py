"""Neighbour search: one engine protocol, its engines, the one chooser, a cache around any engine,
and the fusion of signals (STYLE.md section 10).

Modules:
    protocol       `NeighborEngine`: build over rows, k nearest within a radius, distances.
    result         `NeighborSearch` and engine-independent operations on results.
    engines        ExactCosine (fp32, or the bf16 candidate filter), IndexedCosine (faiss IVF),
                   ExactHamming, IndexedHamming (multi-index hashing).
    exact_cosine, bf16, ivf, batches, exact_hamming, mih, mih_plan: the algorithms behind them.
    choose         `choose_engine`: the engine for a signal and a size, with a one-line reason.
    cache          `SearchCache`: a search kept by content hash between runs, for any engine.
    signals        `HashSignal`: the pHash signal's vouching rules.
    contents       `find_content_neighbors`: every signal fused, for scoring and the checks.

Nothing is re-exported here: importing a module of the package does not load the others (the
turned-copy signal, imported by `contents`, itself uses `result`).
"""
