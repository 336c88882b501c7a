//! Sharing, pinning and health of concurrent scrapes, with a stand-in link source.

use super::*;
use crate::collect::{CollectorConfig, EbpfMode};
use crate::filter::InterfaceFilter;
use crate::sources::netlink::{LinkDump, NetlinkError, DEFAULT_DUMP_TIMEOUT};
use http_body_util::BodyExt;
use std::sync::atomic::AtomicBool;

fn scraper_with(links: crate::collect::LinkSource, wedged_after: Duration) -> Arc<Scraper> {
    let config = CollectorConfig {
        node: "n".into(),
        labels: vec![],
        filter: InterfaceFilter::All,
        netlink_timeout: DEFAULT_DUMP_TIMEOUT,
    };
    let disabled = EbpfMode::Disabled {
        reason: "test".into(),
    };
    let collector = Collector::with_link_source(config, disabled, links);
    Scraper::new(Arc::new(collector), wedged_after, Profile::Default)
}

fn one_link() -> crate::collect::LinkSource {
    Box::new(|| {
        Ok(LinkDump {
            links: vec![crate::sources::netlink::Link {
                ifindex: 1,
                name: "lo".into(),
                ..Default::default()
            }],
            ..LinkDump::default()
        })
    })
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_scrapes_share_one_collection_and_one_body() {
    let scraper = scraper_with(one_link(), Duration::from_secs(60));
    // The 32 tasks are queued before the collection task the first one
    // spawns, so on this one thread all of them ask before it can finish:
    // they must all join the first collection.
    let mut scrapes = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let scraper = Arc::clone(&scraper);
        scrapes.spawn(async move { scraper.collect().await });
    }
    let all: Vec<_> = scrapes
        .join_all()
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert!(all.iter().all(|c| c.collections_total == 1));
    assert!(all.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    // Once it finished, the next scrape collects afresh.
    assert_eq!(scraper.collect().await.unwrap().collections_total, 2);
    assert!(scraper.is_ready());
    assert!(scraper.health().is_ok());
}

/// `count` links, so the text spans many chunks.
fn many_links(count: u32) -> crate::collect::LinkSource {
    Box::new(move || {
        Ok(LinkDump {
            links: (1..=count)
                .map(|ifindex| crate::sources::netlink::Link {
                    ifindex,
                    name: format!("veth{ifindex}"),
                    ..Default::default()
                })
                .collect(),
            ..LinkDump::default()
        })
    })
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_streams_whole_in_chunks_either_encoding_and_is_released_when_done() {
    let scraper = scraper_with(many_links(300), Duration::from_secs(60));
    let collected = scraper.collect().await.unwrap();
    let body = scraper.body(&collected, Encoding::Identity);
    assert_eq!(scraper.bodies.retained(), 1);
    let text = body.collect().await.expect("not evicted").to_bytes();
    assert_eq!(scraper.bodies.retained(), 0, "released once read");
    assert_eq!(text.len(), collected.len(Encoding::Identity));
    assert!(text.len() > 4 * 32 * 1024, "spans several chunks");
    let text = std::str::from_utf8(&text).expect("UTF-8");
    assert!(text.contains("network_interface_stats_mtu{interface=\"veth300\""));
    assert!(text.ends_with('\n'));

    let zipped = scraper.body(&collected, Encoding::Gzip);
    let zipped = zipped.collect().await.expect("not evicted").to_bytes();
    assert_eq!(zipped.len(), collected.len(Encoding::Gzip));
    assert!(zipped.len() * 5 < text.len(), "compresses");
    // A standard gzip reader checks the header, CRC and length.
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped[..]),
        &mut unzipped,
    )
    .expect("valid gzip");
    assert_eq!(unzipped, text);
}

#[tokio::test(flavor = "current_thread")]
async fn readers_of_more_bodies_than_retained_cut_the_oldest_and_free_it() {
    let scraper = scraper_with(one_link(), Duration::from_secs(60));
    let mut stalled = Vec::new();
    let mut first = None;
    for _ in 0..=RETAINED_BODIES {
        let collected = scraper.collect().await.unwrap();
        stalled.push(scraper.body(&collected, Encoding::Identity));
        first.get_or_insert_with(|| Arc::downgrade(&collected));
    }
    assert_eq!(scraper.bodies.retained(), RETAINED_BODIES);
    assert!(first.unwrap().upgrade().is_none(), "oldest body freed");
    let oldest = stalled.remove(0);
    assert!(oldest.collect().await.is_err(), "its reader is cut");
    assert_eq!(scraper.http_stats().evicted_responses_cut, 1);
    for newer in stalled {
        assert!(newer.collect().await.is_ok());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn health_turns_red_on_a_wedged_collection_and_on_repeated_failures() {
    let release = Arc::new(AtomicBool::new(false));
    let fail = Arc::new(AtomicBool::new(false));
    let (r, f) = (Arc::clone(&release), Arc::clone(&fail));
    let links: crate::collect::LinkSource = Box::new(move || {
        // Bounded: the test releases it, and it gives up after 10 s.
        let started = Instant::now();
        while !r.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if f.load(Ordering::Relaxed) {
            return Err(NetlinkError::Timeout {
                request: "RTM_GETLINK",
                timeout: Duration::from_millis(1),
            });
        }
        Ok(LinkDump::default())
    });
    let scraper = scraper_with(links, Duration::from_millis(50));
    let pending = tokio::spawn({
        let scraper = Arc::clone(&scraper);
        async move { scraper.collect().await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let wedged = scraper.health().expect_err("wedged collection");
    assert!(wedged.contains("running for"), "{wedged}");
    release.store(true, Ordering::Relaxed);
    pending.await.unwrap();
    assert!(scraper.health().is_ok());

    fail.store(true, Ordering::Relaxed);
    for _ in 0..UNHEALTHY_AFTER_FAILURES {
        scraper.collect().await;
    }
    let failing = scraper.health().expect_err("failing netlink");
    assert!(failing.contains("did not complete"), "{failing}");
    fail.store(false, Ordering::Relaxed);
    scraper.collect().await;
    assert!(scraper.health().is_ok(), "one success heals");
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_that_leaves_mid_collection_strands_nothing() {
    let release = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicU64::new(0));
    let (r, f) = (Arc::clone(&release), Arc::clone(&finished));
    let links: crate::collect::LinkSource = Box::new(move || {
        // Bounded: the test releases it, and it gives up after 10 s.
        let started = Instant::now();
        while !r.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        f.fetch_add(1, Ordering::Relaxed);
        Ok(LinkDump::default())
    });
    let wedged_after = Duration::from_millis(100);
    let scraper = scraper_with(links, wedged_after);
    // The only waiter: a client that disconnects while its collection runs.
    let waiter = tokio::spawn({
        let scraper = Arc::clone(&scraper);
        async move { scraper.collect().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    waiter.abort();
    assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
    release.store(true, Ordering::Relaxed);
    // Bounded wait for the blocking part to end, then longer than a
    // collection may run: nobody polls in between.
    let deadline = Instant::now() + Duration::from_secs(10);
    while finished.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the collection never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(wedged_after * 3).await;
    assert!(
        scraper.health().is_ok(),
        "a finished collection reported as running: {:?}",
        scraper.health()
    );
    assert!(scraper.is_ready(), "its outcome was recorded");
    // The next scrape collects afresh instead of being handed the old one.
    let fresh = scraper.collect().await.expect("collected");
    assert_eq!(fresh.collections_total, 2);
    assert_eq!(finished.load(Ordering::Relaxed), 2);
}
