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
