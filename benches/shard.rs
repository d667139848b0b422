//! `shard`: the owner computation per event, both strategies.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway_actors::partition::{owner_of_str, Partition, Strategy};
use std::hint::black_box;

fn shard(c: &mut Criterion) {
    let ids: Vec<u64> = (0..10_000u64)
        .map(|i| 1_325_263_406_417_087_088 + i * 7_919_113)
        .collect();
    let strings: Vec<String> = ids.iter().map(u64::to_string).collect();
    let mut group = c.benchmark_group("shard");
    group.throughput(Throughput::Elements(ids.len() as u64));
    for strategy in [Strategy::Md5, Strategy::Discord] {
        let sharding = Partition::new(strategy, 0, 3);
        group.bench_function(BenchmarkId::new("numeric", strategy.as_str()), |b| {
            b.iter(|| {
                ids.iter()
                    .filter(|&&id| sharding.owner(black_box(id)) == 0)
                    .count()
            })
        });
        group.bench_function(BenchmarkId::new("string", strategy.as_str()), |b| {
            b.iter(|| {
                strings
                    .iter()
                    .filter(|id| owner_of_str(strategy, black_box(id), 3) == Ok(0))
                    .count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, shard);
criterion_main!(benches);
