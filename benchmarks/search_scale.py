"""Gallery search at scale: exact torch, exact FAISS and approximate FAISS (IVF).

For each gallery size (10k, 100k and 1M by default, dimension 768) the
script draws *random structured features* (below), then measures with
``mmdmpt.evaluation.GallerySearcher``:

- ``torch``: the exact search (float64 distances, stable order), the default;
- ``faiss-exact``: ``backend='faiss', index='flat'``; its results are checked
  to be identical to ``torch`` on the queries both ran;
- ``faiss-ivf``: ``backend='faiss', index='ivf'`` (inverted lists); its
  ``nprobe`` (lists searched per query) is the smallest of 1, 2, 4, ... whose
  recall@10 reaches ``--target-recall`` on a separate set of *calibration*
  queries, then it is measured on the test queries.

Reported per method: build seconds, queries per second (one batched search
of the test queries, after a small warm-up), recall@10 against the exact
top-10, the peak resident memory of the process while it searched, and the
ratio of its queries per second to ``torch``'s. ``torch`` runs on fewer
queries on large galleries (``--torch-queries``); its recall is 1 by
definition and ``faiss-exact`` gives the exact top-10 of every test query.

Random structured features: identities in ``--super-clusters`` groups (like
people or vehicles of one kind); an identity's centre is its group's
direction plus its own, and a sample is its centre plus noise, all
L2-normalised. Two samples of one identity have a cosine of about 0.74, of
one group about 0.29, of two groups about 0. Queries are new samples of
gallery identities. Recall of approximate indexes depends on such structure:
real embeddings should be measured with their own data.

Example (about 10 minutes and 8 GB of RAM on two CPU cores)::

    python benchmarks/search_scale.py --sizes 10000 100000 1000000 \
        --out work_dirs/search_scale.json
"""

import argparse
import gc
import json
import math
import os
import time
from typing import Dict, List

import numpy as np
import torch

from mmdmpt.evaluation.functional import GallerySearcher


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[10000, 100000, 1000000])
    parser.add_argument('--dim', type=int, default=768)
    parser.add_argument('--queries', type=int, default=500, help='test queries (FAISS)')
    parser.add_argument(
        '--torch-queries',
        type=int,
        nargs='+',
        default=[500, 200, 64],
        help='test queries of the torch search, per size (the last repeats)',
    )
    parser.add_argument('--calib-queries', type=int, default=200, help='queries choosing nprobe')
    parser.add_argument('--k', type=int, default=10)
    parser.add_argument('--target-recall', type=float, default=0.95)
    parser.add_argument('--samples-per-id', type=int, default=10)
    parser.add_argument('--super-clusters', type=int, default=256)
    parser.add_argument('--noise', type=float, default=0.6, help='sample noise / centre norm')
    parser.add_argument('--threads', type=int, default=None, help='torch / FAISS threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the results as JSON here')
    return parser.parse_args()


def peak_rss_gib(reset: bool = False) -> float:
    """Peak resident memory (GiB) since the last reset (Linux VmHWM)."""
    if reset:
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
        except OSError:
            pass
        return 0.0
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 2**20
    return float('nan')


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.div_(x.norm(dim=1, keepdim=True))


def make_features(args: argparse.Namespace, size: int, gen: torch.Generator) -> Dict:
    """Gallery, calibration and test queries (float32, L2-normalised)."""
    dim = args.dim
    num_ids = max(1, size // args.samples_per_id)
    groups = _unit(torch.randn(args.super_clusters, dim, generator=gen))
    group_of = torch.randint(0, args.super_clusters, (num_ids,), generator=gen)
    centres = torch.empty(num_ids, dim)
    for start in range(0, num_ids, 65536):
        stop = min(start + 65536, num_ids)
        own = _unit(torch.randn(stop - start, dim, generator=gen))
        centres[start:stop] = _unit(0.8 * groups[group_of[start:stop]] + own)

    def samples(pids: torch.Tensor) -> torch.Tensor:
        out = torch.empty(pids.shape[0], dim)
        for start in range(0, pids.shape[0], 65536):
            stop = min(start + 65536, pids.shape[0])
            noise = torch.randn(stop - start, dim, generator=gen) * (args.noise / math.sqrt(dim))
            out[start:stop] = _unit(centres[pids[start:stop]] + noise)
        return out

    gallery_pids = torch.arange(size) % num_ids
    gallery = samples(gallery_pids)
    num_q = args.queries + args.calib_queries
    query_pids = torch.randint(0, num_ids, (num_q,), generator=gen)
    queries = samples(query_pids)
    num_c = args.calib_queries
    return dict(gallery=gallery, calib=queries[:num_c], test=queries[num_c:])


def timed_search(searcher: GallerySearcher, queries: torch.Tensor, k: int):
    """(result, seconds, peak RSS GiB) of one batched search, after a warm-up."""
    searcher.search(queries[:4], k)
    peak_rss_gib(reset=True)
    start = time.perf_counter()
    result = searcher.search(queries, k)
    return result, time.perf_counter() - start, peak_rss_gib()


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean fraction of the exact top-k found."""
    hits = [len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())]
    return float(np.mean(hits))


def run_size(args: argparse.Namespace, size: int, torch_queries: int) -> List[dict]:
    gen = torch.Generator().manual_seed(args.seed + size)
    start = time.perf_counter()
    data = make_features(args, size, gen)
    print(
        f'\n== gallery {size} x {args.dim} (float32 {size * args.dim * 4 / 2**30:.2f} GiB), '
        f'features drawn in {time.perf_counter() - start:.1f} s',
        flush=True,
    )
    gallery, test, calib = data['gallery'], data['test'], data['calib']
    rows = []

    # exact torch search on a subset of the test queries
    start = time.perf_counter()
    searcher = GallerySearcher(gallery, backend='torch')
    build = time.perf_counter() - start
    num_t = min(torch_queries, test.shape[0])
    res_t, sec, peak = timed_search(searcher, test[:num_t], args.k)
    rows.append(
        dict(method='torch', size=size, build_s=build, queries=num_t, qps=num_t / sec,
             recall=1.0, peak_gib=peak)
    )  # fmt: skip
    print(f'torch: {num_t / sec:.1f} q/s on {num_t} queries, peak {peak:.2f} GiB', flush=True)
    del searcher
    gc.collect()

    # exact FAISS: the exact top-k of every test query
    start = time.perf_counter()
    searcher = GallerySearcher(gallery, backend='faiss', index='flat')
    build = time.perf_counter() - start
    res_f, sec, peak = timed_search(searcher, test, args.k)
    identical = torch.equal(res_f.indices[:num_t], res_t.indices) and torch.allclose(
        res_f.distances[:num_t], res_t.distances, rtol=0, atol=1e-12
    )
    exact = res_f.indices
    exact_calib = searcher.search(calib, args.k).indices
    rows.append(
        dict(method='faiss-exact', size=size, build_s=build, queries=test.shape[0],
             qps=test.shape[0] / sec, recall=recall(res_f.indices, exact), peak_gib=peak,
             identical_to_torch=bool(identical))
    )  # fmt: skip
    print(
        f'faiss-exact: {test.shape[0] / sec:.1f} q/s, identical to torch on {num_t} queries: '
        f'{identical}, peak {peak:.2f} GiB',
        flush=True,
    )
    del searcher
    gc.collect()

    # approximate FAISS (IVF): nprobe chosen on the calibration queries
    nlist = max(1, min(size // 39, 2 ** round(math.log2(math.sqrt(size)))))
    start = time.perf_counter()
    searcher = GallerySearcher(
        gallery, backend='faiss', index='ivf', index_options=dict(nlist=nlist, nprobe=1)
    )
    build = time.perf_counter() - start
    chosen, tried = None, []
    nprobe = 1
    while nprobe <= nlist:
        searcher._index.nprobe = nprobe
        r = recall(searcher.search(calib, args.k).indices, exact_calib)
        tried.append((nprobe, r))
        if r >= args.target_recall:
            chosen = nprobe
            break
        nprobe *= 2
    chosen = chosen or nlist
    searcher._index.nprobe = chosen
    res_a, sec, peak = timed_search(searcher, test, args.k)
    rows.append(
        dict(method='faiss-ivf', size=size, build_s=build, queries=test.shape[0],
             qps=test.shape[0] / sec, recall=recall(res_a.indices, exact), peak_gib=peak,
             nlist=nlist, nprobe=chosen, calibration=tried)
    )  # fmt: skip
    print(
        f'faiss-ivf (nlist {nlist}, nprobe {chosen} from {tried}): {test.shape[0] / sec:.1f} '
        f'q/s, recall@{args.k} {rows[-1]["recall"]:.4f}, peak {peak:.2f} GiB',
        flush=True,
    )
    del searcher, data, gallery
    gc.collect()
    for row in rows:
        row['speedup_vs_torch'] = row['qps'] / rows[0]['qps']
    return rows


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        import faiss

        faiss.omp_set_num_threads(args.threads)
    load = os.getloadavg()
    print(
        f'search_scale: sizes {args.sizes}, dim {args.dim}, k {args.k}, torch threads '
        f'{torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} '
        f'on {os.cpu_count()} CPUs',
        flush=True,
    )
    rows: List[dict] = []
    for n, size in enumerate(args.sizes):
        torch_queries = args.torch_queries[min(n, len(args.torch_queries) - 1)]
        rows += run_size(args, size, torch_queries)
    load_after = os.getloadavg()
    print()
    print(
        '| gallery | method | build s | queries | queries/s | x torch | recall@10 | peak RSS GiB |'
    )
    print('|---:|---|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        name = r['method'] + (f' (nprobe {r["nprobe"]}/{r["nlist"]})' if 'nprobe' in r else '')
        print(
            f'| {r["size"]:,} | {name} | {r["build_s"]:.1f} | {r["queries"]} | {r["qps"]:.1f} | '
            f'{r["speedup_vs_torch"]:.1f} | {r["recall"]:.4f} | {r["peak_gib"]:.2f} |'
        )
    print(
        f'load average before {load[0]:.2f}, after {load_after[0]:.2f} (1 min) on '
        f'{os.cpu_count()} CPUs'
    )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(args=vars(args), load=[load, load_after], rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
