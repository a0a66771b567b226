//! The Lua state machine (`rmq-runtime/lua/`), loaded once and called by SHA.
//!
//! Every script is `lib.lua` followed by its own file, so the helpers exist once in source.
//! Calls go out as `EVALSHA` inside pipelines; when Redis answers `NOSCRIPT` (after a
//! restart or `SCRIPT FLUSH`) the client loads the scripts again and repeats only the calls
//! that failed, which is safe because a `NOSCRIPT` call ran nothing.

use std::sync::LazyLock;

/// One transition of the state machine.
pub(crate) struct Script {
    pub(crate) code: String,
    pub(crate) sha: String,
}

impl Script {
    fn new(body: &str) -> Script {
        let code = format!("{}\n{}", include_str!("../lua/lib.lua"), body);
        let sha = redis::Script::new(&code).get_hash().to_string();
        Script { code, sha }
    }

    /// An `EVALSHA` of this script.
    pub(crate) fn call<K: AsRef<str>>(&self, keys: &[K]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len());
        for key in keys {
            cmd.arg(key.as_ref());
        }
        cmd
    }
}

/// All scripts.
pub(crate) struct Scripts {
    pub(crate) produce: Script,
    pub(crate) fetch: Script,
    pub(crate) ack: Script,
    pub(crate) fail: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) replay: Script,
    pub(crate) purge: Script,
}

impl Scripts {
    pub(crate) fn all(&self) -> [&Script; 8] {
        [
            &self.produce,
            &self.fetch,
            &self.ack,
            &self.fail,
            &self.renew,
            &self.release,
            &self.replay,
            &self.purge,
        ]
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    produce: Script::new(include_str!("../lua/produce.lua")),
    fetch: Script::new(include_str!("../lua/fetch.lua")),
    ack: Script::new(include_str!("../lua/ack.lua")),
    fail: Script::new(include_str!("../lua/fail.lua")),
    renew: Script::new(include_str!("../lua/renew.lua")),
    release: Script::new(include_str!("../lua/release.lua")),
    replay: Script::new(include_str!("../lua/replay.lua")),
    purge: Script::new(include_str!("../lua/purge.lua")),
});

#[cfg(test)]
mod tests {
    use rmq_core::TopicKeys;

    /// The key names a script's header lists, in order (`KEYS[2..4] p0..p2` expands).
    fn header_keys(script: &str) -> Vec<String> {
        let mut names = Vec::new();
        for line in script.lines().filter_map(|l| l.strip_prefix("-- KEYS[")) {
            let Some((_, rest)) = line.split_once(']') else {
                continue;
            };
            let name = rest.split_whitespace().next().unwrap_or_default();
            match name.split_once("..") {
                Some(("p0", "p2")) => names.extend(["p0", "p1", "p2"].map(String::from)),
                _ => names.push(name.to_string()),
            }
        }
        names
    }

    /// The Rust key lists (`TopicKeys::for_*`) and the Lua headers must agree, position by
    /// position: a mismatch means a script reads the wrong key.
    #[test]
    fn every_script_gets_the_keys_its_header_lists() {
        let k = TopicKeys::new("pre", "t");
        let suffix = |key: &str| key.rsplit(':').next().unwrap_or_default().to_string();
        let cases: [(&str, &str, Vec<&str>); 8] = [
            (
                "produce",
                include_str!("../lua/produce.lua"),
                k.for_produce().to_vec(),
            ),
            (
                "fetch",
                include_str!("../lua/fetch.lua"),
                k.for_fetch().to_vec(),
            ),
            ("ack", include_str!("../lua/ack.lua"), k.for_ack().to_vec()),
            (
                "fail",
                include_str!("../lua/fail.lua"),
                k.for_fail().to_vec(),
            ),
            (
                "renew",
                include_str!("../lua/renew.lua"),
                k.for_renew().to_vec(),
            ),
            (
                "release",
                include_str!("../lua/release.lua"),
                k.for_release().to_vec(),
            ),
            (
                "replay",
                include_str!("../lua/replay.lua"),
                k.for_replay().to_vec(),
            ),
            (
                "purge",
                include_str!("../lua/purge.lua"),
                k.for_purge().to_vec(),
            ),
        ];
        for (name, script, keys) in cases {
            let given: Vec<String> = keys.iter().map(|key| suffix(key)).collect();
            assert_eq!(given, header_keys(script), "{name}.lua");
        }
    }
}
