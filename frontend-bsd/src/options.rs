//! `-o` mount options: the ones both frontends share (parsed by the
//! engine's `mount_opts`), plus the ones FreeBSD's `mount_fusefs` knows.
//! Anything else is refused, so a typo never silently mounts with defaults.

use ext4_engine::mount_opts::{MountOptions, OptionError};

/// Everything `-o` can say, after parsing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOpts {
    pub common: MountOptions,
    /// Prefix absolute symlink targets with the mount point.
    pub push_symlinks_in: bool,
    /// Let signals interrupt requests waiting on the server (FreeBSD).
    pub intr: bool,
    /// `mount_fusefs` options that only mean something on FreeBSD
    /// (`private`, `noprivate`, `neglect_shares`); ignored elsewhere.
    pub bsd_only: Vec<String>,
}

fn refuse<T>(msg: String) -> Result<T, OptionError> {
    Err(OptionError(msg))
}

impl MountOpts {
    /// Apply one `-o` argument (comma-separated options, `\,` escapes).
    pub fn parse(&mut self, list: &str) -> Result<(), OptionError> {
        for opt in ext4_engine::mount_opts::split_list(list) {
            self.parse_one(&opt)?;
        }
        Ok(())
    }

    fn parse_one(&mut self, opt: &str) -> Result<(), OptionError> {
        let Some((name, value)) = self.common.apply(opt)? else {
            return Ok(());
        };
        let flag = |set: &mut bool| match value {
            None => {
                *set = true;
                Ok(())
            }
            Some(_) => refuse(format!("mount option {name} takes no value")),
        };
        match name {
            "push_symlinks_in" => flag(&mut self.push_symlinks_in)?,
            "intr" => flag(&mut self.intr)?,
            "private" | "noprivate" | "neglect_shares" => {
                let mut seen = false;
                flag(&mut seen)?;
                self.bsd_only.push(name.to_string());
            }
            _ => return refuse(format!("unknown mount option '{opt}'")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountOpts, OptionError> {
        let mut o = MountOpts::default();
        o.parse(s)?;
        Ok(o)
    }

    #[test]
    fn options() {
        let o = parse("ro,allow_other,uid=1000,cache_size=8m,fsname=/dev/ada0p2").unwrap();
        assert!(o.common.allow_other);
        assert_eq!(o.common.uid, Some(1000));
        assert_eq!(o.common.fsname.as_deref(), Some("/dev/ada0p2"));
        let o = parse("push_symlinks_in,intr,max_read=64k,nosuid,private").unwrap();
        assert!(o.push_symlinks_in && o.intr);
        assert_eq!(o.common.max_read, Some(65536));
        assert_eq!(o.bsd_only, vec!["private".to_string()]);
    }

    #[test]
    fn refusals() {
        assert!(parse("rw").unwrap_err().0.contains("read-only"));
        assert!(parse("bogus").unwrap_err().0.contains("unknown"));
        assert!(parse("threads=2").unwrap_err().0.contains("unknown"));
        assert!(parse("intr=1").unwrap_err().0.contains("no value"));
        assert!(parse("max_read").unwrap_err().0.contains("needs a value"));
        assert!(parse("max_read=12").is_err());
    }
}
