//! `stats`: message statistics on ordinary and hostile contents.
//!
//! The hostile shapes are ones that made a regex-based split quadratic: an unclosed fence
//! ("```a " repeated, where each "```" could open a fence closed by a later "\n```"), and an
//! unclosed markdown link ("[a](`b` " repeated). Throughput is in bytes, so the per-byte cost
//! of each size shows whether the cost grows linearly.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use gateway_actors::stats::message_stats;
use std::hint::black_box;

fn repeat_to(unit: &str, bytes: usize) -> String {
    unit.repeat(bytes.div_ceil(unit.len()))
        .chars()
        .take(bytes)
        .collect()
}

/// An ordinary long message: prose, inline code, a link, a markdown link and a fenced block.
fn normal_message(chars: usize) -> String {
    let paragraph = "Tried the new `useMemo` hook again and it still re-renders, see \
        https://react.dev/reference/react/useMemo for the details or [the issue](https://github.com/facebook/react/issues/123).\n\
        ```ts\nconst value = useMemo(() => compute(a, b), [a, b]);\n```\n\
        Any idea why the reducer runs twice in strict mode? Thanks a lot, everyone!\n";
    repeat_to(paragraph, chars)
}

fn stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("message_stats");
    // Big inputs may take seconds per call; flat sampling keeps the number of calls small.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let cases = [
        ("normal", normal_message(4_000)),
        ("fence_open", repeat_to("```a ", 4_000)),
        ("fence_open", repeat_to("```a ", 10_000)),
        ("fence_open", repeat_to("```a ", 100_000)),
        ("fence_open", repeat_to("```a ", 300_000)),
        ("link_open", repeat_to("[a](`b` ", 10_000)),
        ("link_open", repeat_to("[a](`b` ", 100_000)),
        ("link_open", repeat_to("[a](`b` ", 300_000)),
    ];
    for (name, content) in &cases {
        group.throughput(Throughput::Bytes(content.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(*name, content.len()),
            content.as_str(),
            |b, content| b.iter(|| message_stats(black_box(content))),
        );
    }
    group.finish();
}

criterion_group!(benches, stats);
criterion_main!(benches);
