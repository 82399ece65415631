//! Single Packet Authorization, user side: the pkd / nf-pkd and fwknop verifiers, the
//! durable replay cache, and the client packets.
//!
//! The kernel (`statewall_common::spa`) hands candidates over by ring buffer; the runtime
//! ([`SpaRuntime`]) checks them against the configured actions and stanzas and says which
//! grants to make. Every check on a secret compares in constant time; nothing here panics
//! on any input (the fuzz targets feed it arbitrary bytes).
//!
//! Files, lowest first: `policy` (limits on grants, reasons to refuse, port and network
//! matching), `pkd` and `fwknop` (each format and its check), `replay` (the cache),
//! `config` (the `[spa]` section), `runtime` (the verifier the daemon runs), `kernel`
//! (what it writes into the kernel), `client` (building and sending packets). May import:
//! `engine`, `types`.

pub mod client;
pub mod config;
pub mod fwknop;
pub mod kernel;
pub mod pkd;
pub mod policy;
pub mod replay;
pub mod runtime;

pub use client::*;
pub use fwknop::*;
pub use pkd::*;
pub use policy::*;
pub use replay::*;
pub use runtime::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn replay_cache_writes_in_place_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("sw-replay-pad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("spa-replay");
        let mut c = ReplayCache::open(Some(&p), 100_000, 10).unwrap();
        let size = std::fs::metadata(&p).unwrap().len();
        c.insert([1; 32], 1000, 10).unwrap();
        c.insert([2; 32], 1000, 10).unwrap();
        // Records overwrite padding: the size (and so the journal) is untouched.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), size);
        // Past the padding, more is added and records go on.
        for i in 0..2000u32 {
            let mut d = [3u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(d, 1000, 10).unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() > size);
        drop(c);
        let c = ReplayCache::open(Some(&p), 100_000, 10).unwrap();
        assert_eq!(c.len(), 2002);
        assert!(c.contains(&[1; 32], 10) && c.contains(&[2; 32], 10));
        let mut again = ReplayCache::open(Some(&p), 100_000, 10).unwrap();
        assert_eq!(again.insert([2; 32], 1000, 10), Err(Reject::Replay));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pkd_known_answer() {
        let key = pkd_bytes::<40>("testing test test").unwrap();
        let tag = pkd_bytes::<4>("test").unwrap();
        let d = pkd_digest(1234, &tag, 1539746929, &[0; 12], &key);
        assert_eq!(
            hex::encode(d),
            "14e922278a4d3302ebbb893cf3bab52ea0314d6a582f665b05b867c1a5ad3b97"
        );
        let p = pkd_packet(1234, &tag, &key, 1539746929, &[0; 12]);
        assert_eq!(hex::encode(p), "7465737471acc65b0000000000000000000000000000000014e922278a4d3302ebbb893cf3bab52ea0314d6a582f665b05b867c1a5ad3b97");
        let a = PkdAction {
            name: "a".into(),
            port: 22,
            protos: vec![6],
            tag,
            key,
            window: 60,
            skew: Some(10),
            reset: false,
            min_interval: 0,
        };
        let acts = [a];
        assert!(pkd_check(&p, 1234, 1539746929 + 5, &acts).is_ok());
        assert_eq!(
            pkd_check(&p, 1234, 1539746929 + 11, &acts).unwrap_err(),
            Reject::Stale
        );
        assert_eq!(
            pkd_check(&p, 1235, 1539746929, &acts).unwrap_err(),
            Reject::BadDigest
        );
        assert_eq!(
            pkd_check(&p[..55], 1234, 1539746929, &acts).unwrap_err(),
            Reject::Malformed
        );
        let mut bad = p;
        bad[30] ^= 1;
        assert_eq!(
            pkd_check(&bad, 1234, 1539746929, &acts).unwrap_err(),
            Reject::BadDigest
        );
        assert_eq!(pkd_bytes::<4>("0x53534b48").unwrap(), *b"SSKH");
        assert!(pkd_bytes::<4>("toolong").is_err());
    }

    #[test]
    fn runtime_per_action_interval_and_replay() {
        let tag = *b"SSHK";
        let key = pkd_bytes::<40>("k").unwrap();
        let action = |name: &str, min_interval| PkdAction {
            name: name.into(),
            port: 22,
            protos: vec![6, 17],
            tag,
            key,
            window: 30,
            skew: Some(10),
            reset: false,
            min_interval,
        };
        let setup = crate::spa::config::SpaSetup {
            pkd: vec![action("a", 5), action("b", 0)],
            fwknop: vec![],
        };
        let mut rt = SpaRuntime::new(setup, ReplayCache::open(None, 100, 0).unwrap());
        let src: IpAddr = "10.0.0.1".parse().unwrap();
        let knock = |n: u8, ts: u64, src: IpAddr| Candidate {
            kind: statewall_common::spa::KIND_PKD,
            src,
            dport: 999,
            payload: pkd_packet(999, &tag, &key, ts, &[n; 12]).to_vec(),
        };
        // Two actions share the tag and key: both open (several actions per tag).
        let a = rt.handle(&knock(1, 100, src), 100).unwrap();
        assert_eq!(a.names, ["a", "b"]);
        assert_eq!(a.grants.len(), 4, "tcp and udp for each");
        // Within 5 s only the unlimited action opens; the same packet again is a replay.
        assert_eq!(rt.handle(&knock(2, 102, src), 102).unwrap().names, ["b"]);
        assert_eq!(
            rt.handle(&knock(2, 102, src), 102).unwrap_err(),
            Reject::Replay
        );
        // Another source has its own interval; after 5 s both open again.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            rt.handle(&knock(3, 103, other), 103).unwrap().names,
            ["a", "b"]
        );
        assert_eq!(
            rt.handle(&knock(4, 105, src), 105).unwrap().names,
            ["a", "b"]
        );
        // Only the limited action: rate_limited.
        rt.setup.pkd.truncate(1);
        assert_eq!(
            rt.handle(&knock(5, 106, src), 106).unwrap_err(),
            Reject::RateLimited
        );
        assert_eq!(rt.counts["rate_limited"], 1);
        assert_eq!(rt.counts["replay"], 1);
        assert_eq!(rt.counts["accepted"], 4);
    }

    #[test]
    fn evp_bytes_to_key_known_answer() {
        // `openssl enc -aes-256-cbc -md md5 -P -S 0102030405060708 -k secret`
        let (k, iv) = evp_bytes_to_key(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            hex::encode(k),
            "c9e5a1bd216dbe1317e230cef48f38ee7f0e17ad64022144bccec4a1aa2879ab"
        );
        assert_eq!(hex::encode(iv), "e24b32bbbc4ef02ecbcb6576523ad893");
    }

    #[test]
    fn replay_cache_survives_reopen_and_fills() {
        let dir = std::env::temp_dir().join(format!("sw-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("replay");
        let _ = std::fs::remove_file(&p);
        let mut c = ReplayCache::open(Some(&p), 2, 100).unwrap();
        c.insert([1; 32], 200, 100).unwrap();
        assert_eq!(c.insert([1; 32], 200, 150), Err(Reject::Replay));
        let mut c = ReplayCache::open(Some(&p), 2, 150).unwrap();
        assert_eq!(
            c.insert([1; 32], 300, 150),
            Err(Reject::Replay),
            "after a restart"
        );
        c.insert([2; 32], 300, 150).unwrap();
        assert_eq!(c.insert([3; 32], 300, 150), Err(Reject::CacheFull));
        // Once an entry expires there is room again; then the cache is full again.
        c.insert([3; 32], 400, 250).unwrap();
        assert_eq!(c.insert([4; 32], 400, 250), Err(Reject::CacheFull));
        // Expired entries are dropped on load; an expired digest is new again.
        let mut c = ReplayCache::open(Some(&p), 2, 350).unwrap();
        assert_eq!(c.len(), 1);
        c.insert([2; 32], 500, 350).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
