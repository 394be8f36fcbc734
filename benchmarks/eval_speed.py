"""Speed and memory of the chunked ReID evaluation against a per-query loop.

Generates random identity-structured features with a fixed seed, times
``mmdmpt.evaluation.functional.evaluate_features`` on the whole query x
gallery problem (10,000 x 50,000 by default) and a straightforward per-query
NumPy loop (one query's distances, stable argsort, removal mask, AP/INP/CMC).
The loop runs on the first ``--loop-queries`` queries only and its time is
extrapolated linearly to all queries (the output says so); both are checked
to agree on that subset.

The default ``--dim 768`` keeps the run at a few minutes on two CPU cores and
well inside 24 GiB. The features of a three-modality ViT-B model are 2304-d
(``--dim 2304``): that only makes the distance products (in both methods)
three times longer; the ranking work does not depend on the dimension.

Both are timed in the same run, one after the other (wall clock and the
process's CPU time): the ratio is what the machine gave both at that moment.
On a busy machine the wall clock of multi-threaded code suffers most; the
CPU seconds show the work itself.

Examples::

    python benchmarks/eval_speed.py --num-query 10000 --num-gallery 50000 \
        --dim 768 --loop-queries 200 --out work_dirs/eval_speed.json
    # the speed target: 3,000 x 20,000 x 256, the whole loop measured
    python benchmarks/eval_speed.py --num-query 3000 --num-gallery 20000 --dim 256 \
        --loop-queries 0
"""

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from mmdmpt.evaluation.functional import auto_chunk_size, evaluate_features


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--num-query', type=int, default=10000)
    parser.add_argument('--num-gallery', type=int, default=50000)
    parser.add_argument('--dim', type=int, default=768, help='feature dim (2304 = 3 x 768)')
    parser.add_argument('--num-ids', type=int, default=1000)
    parser.add_argument('--num-cams', type=int, default=6)
    parser.add_argument(
        '--noise', type=float, default=2.5, help='noise scale around the unit-variance id centres'
    )
    parser.add_argument('--metric', default='cosine', choices=['cosine', 'euclidean'])
    parser.add_argument(
        '--chunk-size', type=int, default=None, help='queries per chunk (default: automatic)'
    )
    parser.add_argument(
        '--loop-queries',
        type=int,
        default=200,
        help='queries timed with the per-query loop, extrapolated to all (0 = all)',
    )
    parser.add_argument('--max-rank', type=int, default=50)
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='write the numbers as JSON here')
    return parser.parse_args()


def make_data(args: argparse.Namespace) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    centers = torch.randn(args.num_ids, args.dim, generator=gen)

    def split(num):
        pids = torch.randint(0, args.num_ids, (num,), generator=gen)
        cams = torch.randint(0, args.num_cams, (num,), generator=gen)
        feats = centers[pids]
        feats += args.noise * torch.randn(num, args.dim, generator=gen)
        return feats, pids.numpy(), cams.numpy()

    q_feats, q_pids, q_cams = split(args.num_query)
    g_feats, g_pids, g_cams = split(args.num_gallery)
    return dict(
        q_feats=q_feats, g_feats=g_feats, q_pids=q_pids, g_pids=g_pids, q_cams=q_cams, g_cams=g_cams
    )


def rss_mib() -> float:
    """Current resident set size in MiB (Linux), else NaN."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    except OSError:
        return float('nan')


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM); False if not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss_mib(resettable: bool) -> float:
    """Peak RSS in MiB since the last reset (or since the process started)."""
    if resettable:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loop_evaluate(data: dict, num: int, metric: str, max_rank: int) -> dict:
    """The straightforward per-query loop on the first ``num`` queries."""
    q = data['q_feats'][:num].double().numpy()
    g = data['g_feats'].double().numpy()
    if metric == 'cosine':
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    else:
        g_sq = (g * g).sum(1)
    g_pids, g_cams = data['g_pids'], data['g_cams']
    ap_sum = inp_sum = 0.0
    cmc = np.zeros(max_rank)
    valid = 0
    for i in range(num):
        if metric == 'cosine':
            dist = 1.0 - g @ q[i]
        else:
            dist = np.sqrt(np.maximum(g_sq + q[i] @ q[i] - 2.0 * (g @ q[i]), 0.0))
        order = np.argsort(dist, kind='stable')
        matches = g_pids[order] == data['q_pids'][i]
        keep = ~(matches & (g_cams[order] == data['q_cams'][i]))
        positions = np.flatnonzero(matches[keep]) + 1
        if positions.size == 0:
            continue
        valid += 1
        if positions[0] <= max_rank:
            cmc[positions[0] - 1 :] += 1
        ap_sum += np.mean(np.arange(1, positions.size + 1) / positions)
        inp_sum += positions.size / positions[-1]
    return dict(mAP=ap_sum / valid, mINP=inp_sum / valid, cmc=cmc / valid, num_valid_queries=valid)


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    chunk = args.chunk_size or auto_chunk_size(args.num_gallery)
    print(
        f'eval_speed: {args.num_query} queries x {args.num_gallery} gallery, dim {args.dim}, '
        f'{args.num_ids} ids, {args.num_cams} cams, metric {args.metric}, chunk {chunk} '
        f'queries, device {device}, torch threads {torch.get_num_threads()}'
    )
    t0 = time.perf_counter()
    data = make_data(args)
    print(f'data generated in {time.perf_counter() - t0:.1f} s')
    ids = dict(
        query_pids=data['q_pids'],
        gallery_pids=data['g_pids'],
        query_camids=data['q_cams'],
        gallery_camids=data['g_cams'],
    )
    q_feats, g_feats = data['q_feats'].to(device), data['g_feats'].to(device)

    # --- chunked evaluation, all queries ---
    rss_before = rss_mib()
    resettable = reset_peak_rss()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    c0 = time.process_time()
    fast = evaluate_features(
        q_feats,
        g_feats,
        max_rank=args.max_rank,
        metric=args.metric,
        chunk_size=args.chunk_size,
        **ids,
    )
    if device.type == 'cuda':
        torch.cuda.synchronize()
    fast_s = time.perf_counter() - t0
    fast_cpu = time.process_time() - c0
    fast_peak = peak_rss_mib(resettable)
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda' else None

    # --- per-query loop on a subset, extrapolated ---
    num_loop = args.num_query if args.loop_queries <= 0 else min(args.loop_queries, args.num_query)
    resettable = reset_peak_rss()
    t0 = time.perf_counter()
    c0 = time.process_time()
    loop = loop_evaluate(data, num_loop, args.metric, args.max_rank)
    loop_s = time.perf_counter() - t0
    loop_cpu = time.process_time() - c0
    loop_peak = peak_rss_mib(resettable)
    loop_full_s = loop_s * args.num_query / num_loop
    loop_full_cpu = loop_cpu * args.num_query / num_loop
    extrapolated = num_loop < args.num_query

    # --- agreement on the subset ---
    sub = evaluate_features(
        q_feats[:num_loop],
        g_feats,
        max_rank=args.max_rank,
        metric=args.metric,
        chunk_size=args.chunk_size,
        **{k: (v[:num_loop] if k.startswith('query') else v) for k, v in ids.items()},
    )
    diff = max(
        abs(sub['mAP'] - loop['mAP']),
        abs(sub['mINP'] - loop['mINP']),
        float(np.abs(sub['cmc'] - loop['cmc']).max()),
    )
    agree = diff < 1e-9 and sub['num_valid_queries'] == loop['num_valid_queries']

    loop_label = f'per-query loop ({num_loop} queries'
    loop_label += f', x{args.num_query / num_loop:.0f} extrapolated)' if extrapolated else ')'
    rows = [
        ('evaluate_features (chunked)', fast_s, fast_cpu, fast_peak),
        (loop_label, loop_full_s, loop_full_cpu, loop_peak),
    ]
    print()
    print(f'{"method":<46} {"seconds":>10} {"CPU s":>8} {"peak RSS MiB":>13}')
    for name, sec, cpu, peak in rows:
        print(f'{name:<46} {sec:>10.1f} {cpu:>8.1f} {peak:>13.0f}')
    print(
        f'speed ratio loop / chunked: {loop_full_s / fast_s:.1f}x (wall clock), '
        f'{loop_full_cpu / fast_cpu:.1f}x (CPU time); load average {os.getloadavg()[0]:.2f} '
        f'on {os.cpu_count()} CPUs'
    )
    if extrapolated:
        print(f'  (loop measured: {loop_s:.1f} s for {num_loop} queries, scaled linearly)')
    print(
        f'RSS before evaluation {rss_before:.0f} MiB; chunked peak {fast_peak:.0f} MiB '
        f'(+{fast_peak - rss_before:.0f} MiB)'
        + ('' if resettable else ' [peak = process lifetime peak: VmHWM not resettable]')
    )
    if gpu_peak is not None:
        print(f'torch CUDA peak allocated: {gpu_peak:.0f} MiB')
    print(
        f'full results: mAP {100 * fast["mAP"]:.2f}  mINP {100 * fast["mINP"]:.2f}  '
        f'Rank-1 {100 * fast["cmc"][0]:.2f}  valid {fast["num_valid_queries"]}  '
        f'skipped {fast["num_invalid_queries"]}'
    )
    print(
        f'agreement on the {num_loop}-query subset: max |diff| {diff:.2e} '
        f'-> {"OK" if agree else "MISMATCH"}'
    )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    args=vars(args),
                    chunk_size=chunk,
                    chunked_seconds=fast_s,
                    chunked_cpu_seconds=fast_cpu,
                    loop_cpu_seconds_full=loop_full_cpu,
                    load_average=os.getloadavg()[0],
                    loop_seconds_measured=loop_s,
                    loop_queries=num_loop,
                    loop_seconds_full=loop_full_s,
                    loop_extrapolated=extrapolated,
                    speed_ratio=loop_full_s / fast_s,
                    rss_before_mib=rss_before,
                    chunked_peak_rss_mib=fast_peak,
                    loop_peak_rss_mib=loop_peak,
                    cuda_peak_mib=gpu_peak,
                    mAP=fast['mAP'],
                    mINP=fast['mINP'],
                    rank1=float(fast['cmc'][0]),
                    subset_max_abs_diff=diff,
                    agree=agree,
                ),
                f,
                indent=2,
            )
    if not agree:
        raise SystemExit('The chunked evaluation and the loop disagree.')


if __name__ == '__main__':
    main()
