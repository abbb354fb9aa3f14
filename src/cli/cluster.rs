//! Which shard of a batch this task is when a cluster scheduler started it, so that one
//! `ditail batch` line serves every task of an array:
//!
//! - Slurm job arrays (`sbatch --array=MIN-MAX[:STEP]`): the task's `SLURM_ARRAY_TASK_ID`
//!   within `SLURM_ARRAY_TASK_MIN`, `_MAX`, `_STEP` and `_COUNT`, so arrays that start
//!   elsewhere than 0 or step work;
//! - Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX`, with the count (the Job's
//!   `completions`, which Kubernetes does not pass on) from `--shard-count` or
//!   `DITAIL_SHARD_COUNT`.
//!
//! An explicit `--shard I/N` wins. See the
//! [Slurm array variables](https://slurm.schedmd.com/job_array.html) and
//! [Indexed Jobs](https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode).

use anyhow::{Result, bail};

use ditail::app::manifest::Shard;

/// The shard and how it was chosen (printed, so that a task's log says why it ran what).
pub fn shard(
    flag: Option<&str>,
    count_flag: Option<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Shard, String)> {
    if let Some(s) = flag {
        return Ok((Shard::parse(s)?, "--shard".into()));
    }
    let number = |name: &str| -> Result<Option<usize>> {
        match env(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => match v.trim().parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) => bail!("{name}={v:?} is not a whole number"),
            },
        }
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        let max = number("SLURM_ARRAY_TASK_MAX")?;
        let count = match (number("SLURM_ARRAY_TASK_COUNT")?, max) {
            (Some(c), _) => c,
            (None, Some(max)) if max >= min => (max - min) / step + 1,
            _ => bail!(
                "SLURM_ARRAY_TASK_ID={id} without SLURM_ARRAY_TASK_COUNT or _MAX: give --shard I/N"
            ),
        };
        // A list array (--array=1,4,9) has no step that maps ids to 0..count.
        let range = max.is_none_or(|max| max >= min && (max - min) / step + 1 == count);
        if id < min || (id - min) % step != 0 || (id - min) / step >= count || !range {
            bail!(
                "the Slurm array is not a range this task fits (id {id}, min {min}, max {}, step \
                 {step}, count {count}): use --array=MIN-MAX[:STEP], or give --shard I/N",
                max.map_or("?".into(), |m| m.to_string())
            );
        }
        let shard = Shard {
            index: (id - min) / step,
            count,
        };
        return Ok((
            shard,
            format!(
                "Slurm array task {id} of {min}-{}",
                min + (count - 1) * step
            ),
        ));
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = match count_flag {
            Some(c) => Some(c),
            None => number("DITAIL_SHARD_COUNT")?,
        };
        let Some(count) = count else {
            bail!(
                "JOB_COMPLETION_INDEX={index} (a Kubernetes Indexed Job) but no shard count: give \
                 --shard-count N or set DITAIL_SHARD_COUNT to the Job's completions"
            );
        };
        if count == 0 || index >= count {
            bail!("JOB_COMPLETION_INDEX={index} is not below the shard count {count}");
        }
        return Ok((
            Shard { index, count },
            format!("Kubernetes Indexed Job completion index {index} of {count}"),
        ));
    }
    Ok((
        Shard { index: 0, count: 1 },
        "no scheduler array: every row".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn pick(vars: &[(&str, &str)], count: Option<usize>) -> Result<Shard> {
        Ok(shard(None, count, &with(vars))?.0)
    }

    #[test]
    fn slurm_arrays_map_to_shards_from_any_start_and_step() {
        let s = |index, count| Shard { index, count };
        let slurm = |id: &str, min: &str, max: &str, step: &str, count: &str| {
            pick(
                &[
                    ("SLURM_ARRAY_TASK_ID", id),
                    ("SLURM_ARRAY_TASK_MIN", min),
                    ("SLURM_ARRAY_TASK_MAX", max),
                    ("SLURM_ARRAY_TASK_STEP", step),
                    ("SLURM_ARRAY_TASK_COUNT", count),
                ],
                None,
            )
        };
        assert_eq!(slurm("0", "0", "3", "1", "4").unwrap(), s(0, 4));
        assert_eq!(slurm("3", "0", "3", "1", "4").unwrap(), s(3, 4));
        assert_eq!(slurm("5", "1", "8", "1", "8").unwrap(), s(4, 8));
        assert_eq!(slurm("7", "1", "9", "2", "5").unwrap(), s(3, 5));
        // A list array (--array=1,4,9) is not a range.
        assert!(slurm("4", "1", "9", "1", "3").is_err());
        // Only the id: no count.
        assert!(pick(&[("SLURM_ARRAY_TASK_ID", "2")], None).is_err());
    }

    #[test]
    fn kubernetes_indexes_need_a_count_and_the_flag_wins() {
        let k = [("JOB_COMPLETION_INDEX", "2"), ("DITAIL_SHARD_COUNT", "3")];
        assert_eq!(pick(&k, None).unwrap(), Shard { index: 2, count: 3 });
        assert_eq!(
            pick(&k[..1], Some(5)).unwrap(),
            Shard { index: 2, count: 5 }
        );
        assert!(pick(&k[..1], None).is_err());
        assert!(pick(&k, Some(2)).is_err());
        let (s, why) = shard(Some("1/4"), None, &with(&k)).unwrap();
        assert_eq!((s, why.as_str()), (Shard { index: 1, count: 4 }, "--shard"));
        assert_eq!(pick(&[], None).unwrap(), Shard { index: 0, count: 1 });
    }
}
