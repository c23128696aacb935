//! NAR compression: zstd (the default: fast, a ratio close to xz), xz
//! (what Nix uses by default; several times slower, and its encoder alone
//! takes ~94 MiB at level 6) and none.
//!
//! Each NAR is compressed on one thread. zstd's worker threads were tried
//! and dropped: with `--jobs` NARs in flight the cores are busy anyway,
//! one thread (hundreds of MB/s at level 3) outpaces an uplink, and the
//! workers' job buffers cost more memory (+20 MiB) and ratio (-2 %) than
//! they gained.

use std::io::{self, Write};

/// How NAR files are compressed in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// zstd (`.nar.zst`).
    #[default]
    Zstd,
    /// xz (`.nar.xz`).
    Xz,
    /// Uncompressed (`.nar`).
    None,
}

impl Compression {
    /// Parses the manifest's `compression` value.
    pub fn parse(s: &str) -> Result<Compression, String> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "xz" => Ok(Compression::Xz),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "`{other}` is not a supported compression; use one of `zstd`, `xz`, `none`"
            )),
        }
    }

    /// The narinfo `Compression:` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::None => "none",
        }
    }

    /// The NAR file's extension after `.nar`, as Nix names it.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
            Compression::None => "",
        }
    }

    /// The level used when none is given (the codecs' own defaults).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Zstd => 3,
            Compression::Xz => 6,
            Compression::None => 0,
        }
    }

    /// Checks a level for this codec; the message gives the range. `none`
    /// takes no level at all. The one rule for the manifest (`check`) and
    /// the command line (`push`).
    pub fn check_level(self, level: i32) -> Result<(), String> {
        let (lo, hi) = match self {
            Compression::Zstd => (1, 19),
            Compression::Xz => (0, 9),
            Compression::None => return Err("`none` has no level: leave it unset".into()),
        };
        if (lo..=hi).contains(&level) {
            Ok(())
        } else {
            Err(format!(
                "{} levels are {lo} to {hi}, not {level}; or leave it unset for the \
                 codec's default",
                self.name()
            ))
        }
    }
}

/// A compressing writer over `W`.
pub(crate) enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(xz2::write::XzEncoder<W>),
    Plain(W),
}

impl<W: Write> Encoder<W> {
    /// An encoder at `level`.
    pub(crate) fn new(c: Compression, level: i32, inner: W) -> io::Result<Self> {
        Ok(match c {
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(inner, level)?),
            Compression::Xz => Encoder::Xz(xz2::write::XzEncoder::new(inner, level as u32)),
            Compression::None => Encoder::Plain(inner),
        })
    }

    /// Ends the stream and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::Zstd, Compression::Xz, Compression::None] {
            let mut e = Encoder::new(c, c.default_level(), Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            let out = e.finish().unwrap();
            let mut back = Vec::new();
            match c {
                Compression::Zstd => {
                    zstd::stream::read::Decoder::new(&out[..])
                        .unwrap()
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Compression::Xz => {
                    xz2::read::XzDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Compression::None => back = out,
            }
            assert!(back == data, "{c:?}");
        }
    }

    #[test]
    fn levels_and_names() {
        assert!(Compression::Zstd.check_level(19).is_ok());
        assert!(Compression::Zstd.check_level(0).is_err());
        assert!(Compression::Xz.check_level(10).is_err());
        assert!(Compression::None.check_level(1).is_err());
        assert!(Compression::None.check_level(0).is_err());
        assert_eq!(Compression::parse("xz").unwrap().extension(), ".xz");
        assert!(Compression::parse("bzip2").is_err());
    }
}
