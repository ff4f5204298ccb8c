//! The payload's bootargs words, read before any is acted on: a word the
//! payload does not know, or whose numbers do not read, is refused, so a
//! misspelt scenario fails instead of passing by doing nothing. Plain
//! `core`: the harness compiles this file too and tests it on the host.

/// The payload's exit status when it refuses its bootargs (the others:
/// 1 unreadable DTB, 2 isolation broken, 3 canary changed, 4 no edu,
/// 5 and 6 DMA that did not verify, 101 panic).
pub const REFUSED: u64 = 7;

/// One word of the bootargs (what each does: the crate's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word<'a> {
    /// `ticks`
    Ticks,
    /// `hello`
    Hello,
    /// `touch=ADDR`
    Touch(u64),
    /// `exit=N`
    Exit(u64),
    /// `sysreg`
    Sysreg,
    /// `badcalls`
    Badcalls,
    /// `move=GROUP:A:B:N`
    Move { group: u64, a: u64, b: u64, round_trips: u64 },
    /// `info=GROUP`
    Info(u64),
    /// `try-move=GROUP:FROM:TO`
    TryMove { group: u64, from: u64, to: u64 },
    /// `release=GROUP:OWNER`
    Release { group: u64, owner: u64 },
    /// `assign=GROUP:P`
    Assign { group: u64, to: u64 },
    /// `fault-storm=ADDR:N`
    FaultStorm { addr: u64, count: u64 },
    /// `fault-every=ADDR:MS:N`
    FaultEvery { addr: u64, ms: u64, count: u64 },
    /// `storm=MS`
    Storm(u64),
    /// `dma-loop=MS`
    DmaLoop(u64),
    /// `wait=MS`
    Wait(u64),
    /// `canary=ADDR`
    Canary(u64),
    /// `check=ADDR`
    Check(u64),
    /// `watch=ADDR:MS`
    Watch { addr: u64, ms: u64 },
    /// `dma-at=BAR`
    DmaAt(u64),
    /// `dma-own`
    DmaOwn,
    /// `attack=NAME:ADDR`
    Attack { name: &'a str, addr: u64 },
}

/// A number, decimal or `0x` hex.
pub fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Exactly `N` numbers separated by `:`.
fn numbers<const N: usize>(s: &str) -> Option<[u64; N]> {
    let mut it = s.split(':');
    let mut v = [0; N];
    for x in &mut v {
        *x = number(it.next()?)?;
    }
    it.next().is_none().then_some(v)
}

/// Reads one word; `None` when the payload does not know it or its
/// arguments do not read.
pub fn parse(word: &str) -> Option<Word<'_>> {
    let (key, value) = match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    };
    let w = match (key, value) {
        ("ticks", None) => Word::Ticks,
        ("hello", None) => Word::Hello,
        ("sysreg", None) => Word::Sysreg,
        ("badcalls", None) => Word::Badcalls,
        ("dma-own", None) => Word::DmaOwn,
        ("touch", Some(v)) => Word::Touch(number(v)?),
        ("exit", Some(v)) => Word::Exit(number(v)?),
        ("info", Some(v)) => Word::Info(number(v)?),
        ("dma-loop", Some(v)) => Word::DmaLoop(number(v)?),
        ("wait", Some(v)) => Word::Wait(number(v)?),
        ("canary", Some(v)) => Word::Canary(number(v)?),
        ("check", Some(v)) => Word::Check(number(v)?),
        ("dma-at", Some(v)) => Word::DmaAt(number(v)?),
        ("move", Some(v)) => numbers(v).map(|[group, a, b, round_trips]| Word::Move { group, a, b, round_trips })?,
        ("try-move", Some(v)) => numbers(v).map(|[group, from, to]| Word::TryMove { group, from, to })?,
        ("release", Some(v)) => numbers(v).map(|[group, owner]| Word::Release { group, owner })?,
        ("assign", Some(v)) => numbers(v).map(|[group, to]| Word::Assign { group, to })?,
        ("fault-storm", Some(v)) => numbers(v).map(|[addr, count]| Word::FaultStorm { addr, count })?,
        ("fault-every", Some(v)) => numbers(v).map(|[addr, ms, count]| Word::FaultEvery { addr, ms, count })?,
        ("storm", Some(v)) => Word::Storm(number(v)?),
        ("watch", Some(v)) => numbers(v).map(|[addr, ms]| Word::Watch { addr, ms })?,
        ("attack", Some(v)) => {
            let (name, addr) = v.split_once(':')?;
            (!name.is_empty()).then_some(())?;
            Word::Attack { name, addr: number(addr)? }
        }
        _ => return None,
    };
    Some(w)
}

/// The first word of `bootargs` that [`parse`] refuses, if any.
pub fn first_refused(bootargs: &str) -> Option<&str> {
    bootargs.split_ascii_whitespace().find(|w| parse(w).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_word() {
        assert_eq!(parse("ticks"), Some(Word::Ticks));
        assert_eq!(parse("touch=0x4c000000"), Some(Word::Touch(0x4c00_0000)));
        assert_eq!(parse("exit=3"), Some(Word::Exit(3)));
        assert_eq!(parse("move=1:1:2:10"), Some(Word::Move { group: 1, a: 1, b: 2, round_trips: 10 }));
        assert_eq!(parse("try-move=9:2:1"), Some(Word::TryMove { group: 9, from: 2, to: 1 }));
        assert_eq!(parse("release=6:1"), Some(Word::Release { group: 6, owner: 1 }));
        assert_eq!(parse("assign=1:2"), Some(Word::Assign { group: 1, to: 2 }));
        assert_eq!(parse("fault-storm=0x70000000:40"), Some(Word::FaultStorm { addr: 0x7000_0000, count: 40 }));
        assert_eq!(parse("fault-every=0x70000000:1000:6"), Some(Word::FaultEvery { addr: 0x7000_0000, ms: 1000, count: 6 }));
        assert_eq!(parse("storm=6000"), Some(Word::Storm(6000)));
        assert_eq!(parse("watch=0x4c000100:9000"), Some(Word::Watch { addr: 0x4c00_0100, ms: 9000 }));
        assert_eq!(parse("attack=peer-ram:0x4c000100"), Some(Word::Attack { name: "peer-ram", addr: 0x4c00_0100 }));
        assert_eq!(parse("dma-at=0x10000000"), Some(Word::DmaAt(0x1000_0000)));
        let all = "ticks hello sysreg badcalls dma-own info=1 dma-loop=3000 wait=500 canary=0x48000100 check=0x48000100";
        assert_eq!(first_refused(all), None);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(first_refused("hello probe own"), Some("probe"));
        for w in [
            "probe",
            "helo",
            "hello=1",
            "dma-own=1",
            "exit",
            "exit=",
            "exit=three",
            "touch=0xg",
            "move=1:1:2",
            "move=1:1:2:3:4",
            "try-move=1:1",
            "release=1",
            "assign=1:x",
            "attack=0x70000000",
            "attack=:0x1",
            "watch=0x10",
            "Hello",
            "wait=-1",
            "storm=0x70000000:40",
            "storm",
            "fault-every=0x70000000:1000",
        ] {
            assert_eq!(parse(w), None, "{w}");
        }
    }
}
