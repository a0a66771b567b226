//! The Lua state machine (`rmq-runtime/lua/`), loaded once and called by SHA.
//!
//! Every script is the part of `lib.lua` it uses followed by its own file, so the helpers
//! exist once in source (see [`assemble`]).
//! Calls go out as `EVALSHA` inside pipelines; when Redis answers `NOSCRIPT` (after a
//! restart or `SCRIPT FLUSH`) the client loads the scripts again and repeats only the calls
//! that failed, which is safe because a `NOSCRIPT` call ran nothing.

use std::sync::LazyLock;

/// One transition of the state machine.
pub(crate) struct Script {
    pub(crate) code: String,
    pub(crate) sha: String,
}

const LIB: &str = include_str!("../lua/lib.lua");

/// One top-level definition of `lib.lua`: `local function <name>(...)` through its `end`
/// at column 0, or a one-line `local <name> = ...`.
struct LibItem {
    name: &'static str,
    code: String,
}

/// `lib.lua`'s definitions, in order (comments between them left out).
fn lib_items() -> Vec<LibItem> {
    let mut items: Vec<LibItem> = Vec::new();
    let mut open = false;
    for line in LIB.lines() {
        if open {
            let item = items.last_mut().expect("an open item");
            item.code.push_str(line);
            item.code.push('\n');
            open = line != "end";
            continue;
        }
        let Some(rest) = line.strip_prefix("local ") else {
            continue;
        };
        let (function, rest) = match rest.strip_prefix("function ") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        items.push(LibItem {
            name: &rest[..end],
            code: format!("{line}\n"),
        });
        open = function;
    }
    items
}

/// Whether the Lua `code` names `name` outside comments (a whole identifier).
fn mentions(code: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .any(|line| {
            line.match_indices(name).any(|(at, _)| {
                !line[..at].ends_with(word) && !line[at + name.len()..].starts_with(word)
            })
        })
}

/// The script whose own file is `body`: the `lib.lua` definitions it names, directly or
/// through another one, in `lib.lua`'s order, then `body`. Only those: each function a
/// script defines costs Redis a Lua closure (400-1300 instructions) every time the script
/// runs, and lib.lua has fourteen.
pub fn assemble(body: &str) -> String {
    let items = lib_items();
    let mut used = vec![false; items.len()];
    loop {
        let mut grew = false;
        for i in 0..items.len() {
            if used[i] {
                continue;
            }
            let name = items[i].name;
            let by_other = items
                .iter()
                .zip(&used)
                .any(|(other, &u)| u && mentions(&other.code, name));
            if by_other || mentions(body, name) {
                used[i] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut code: String = items
        .iter()
        .zip(used)
        .filter(|(_, u)| *u)
        .map(|(item, _)| item.code.as_str())
        .collect();
    code.push('\n');
    code.push_str(body);
    code
}

impl Script {
    fn new(body: &str) -> Script {
        let code = assemble(body);
        let sha = redis::Script::new(&code).get_hash().to_string();
        Script { code, sha }
    }

    /// An `EVALSHA` of this script.
    pub(crate) fn call<K: AsRef<str>>(&self, keys: &[K]) -> redis::Cmd {
        self.call_with_room(keys, 0, 0)
    }

    /// An `EVALSHA` of this script with room for `args` more arguments of `bytes` bytes in
    /// all, so that writing them does not grow the command's buffer again and again
    /// (callgrind, a single send's arguments: 6.3k instructions with the buffer growing,
    /// 1.9k without).
    pub(crate) fn call_with_room<K: AsRef<str>>(
        &self,
        keys: &[K],
        args: usize,
        bytes: usize,
    ) -> redis::Cmd {
        let key_bytes: usize = keys.iter().map(|k| k.as_ref().len()).sum();
        let mut cmd = redis::Cmd::with_capacity(
            3 + keys.len() + args,
            "EVALSHA".len() + self.sha.len() + 3 + key_bytes + bytes,
        );
        cmd.arg("EVALSHA").arg(&self.sha).arg(keys.len());
        for key in keys {
            cmd.arg(key.as_ref());
        }
        cmd
    }
}

/// All scripts.
pub(crate) struct Scripts {
    pub(crate) produce: Script,
    pub(crate) batch: Script,
    pub(crate) fetch: Script,
    pub(crate) ack: Script,
    pub(crate) fail: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) replay: Script,
    pub(crate) purge: Script,
}

impl Scripts {
    pub(crate) fn all(&self) -> [&Script; 9] {
        [
            &self.produce,
            &self.batch,
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
    batch: Script::new(include_str!("../lua/batch.lua")),
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

    /// Every line of lib.lua outside comments belongs to a definition `assemble` can pick,
    /// so nothing of it is silently left out of every script.
    #[test]
    fn assemble_sees_every_definition_of_lib_lua() {
        let picked: String = super::lib_items().iter().map(|i| i.code.as_str()).collect();
        let code = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
                .map(String::from)
                .collect()
        };
        assert_eq!(code(&picked), code(super::LIB));
        let names: Vec<&str> = super::lib_items().iter().map(|i| i.name).collect();
        assert!(names.contains(&"clock_us") && names.contains(&"record_metrics"));
    }

    /// A script gets the helpers it calls and the ones those call, and no others.
    #[test]
    fn assemble_takes_what_a_script_uses_and_what_that_uses() {
        let code = super::assemble("-- forget(k, id) in a comment does not count\nreturn push_to_parked(k, 'id', 'e', 1)\n");
        for wanted in [
            "local function push_to_parked(",
            "local function lease_of(",
            "local LEASE_PIN =",
        ] {
            assert!(code.contains(wanted), "{wanted} missing from:\n{code}");
        }
        for unwanted in [
            "local function forget(",
            "local function now_ms(",
            "local clock_us",
        ] {
            assert!(!code.contains(unwanted), "{unwanted} in:\n{code}");
        }
        assert!(super::assemble("return now_ms(ARGV[1])").contains("local clock_us = 0"));
    }

    /// The Rust key lists (`TopicKeys::for_*`) and the Lua headers must agree, position by
    /// position: a mismatch means a script reads the wrong key.
    #[test]
    fn every_script_gets_the_keys_its_header_lists() {
        let k = TopicKeys::new("pre", "t");
        let suffix = |key: &str| key.rsplit(':').next().unwrap_or_default().to_string();
        let cases: [(&str, &str, Vec<&str>); 9] = [
            (
                "produce",
                include_str!("../lua/produce.lua"),
                k.for_produce().to_vec(),
            ),
            (
                "batch",
                include_str!("../lua/batch.lua"),
                k.for_batch().to_vec(),
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
