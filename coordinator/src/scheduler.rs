//! `--shard auto`: the shard a scheduler gave this process, read from its environment.
//!
//! Tried in order: our own `COORDINATOR_SHARD_INDEX`/`COORDINATOR_SHARD_COUNT`; a
//! Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, and `JOB_COMPLETIONS`, which the Job
//! spec sets from `.spec.completions`, see scripts/k8s-indexed-job.yaml); a Slurm job
//! array (`SLURM_ARRAY_TASK_ID` less `SLURM_ARRAY_TASK_MIN`, of
//! `SLURM_ARRAY_TASK_COUNT`).

use shared::plan::Shard;

/// (index variable, count variable, variable subtracted from the index) per scheduler.
const SCHEMES: [(&str, &str, Option<&str>); 3] = [
    ("COORDINATOR_SHARD_INDEX", "COORDINATOR_SHARD_COUNT", None),
    ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS", None),
    (
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        Some("SLURM_ARRAY_TASK_MIN"),
    ),
];

/// The shard named by the environment `env` (a lookup such as `std::env::var`).
pub fn shard_from_env(env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
    for (index_var, count_var, min_var) in SCHEMES {
        let Some(index) = env(index_var) else {
            continue;
        };
        let number = |var: &str, text: &str| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("{var}={text} is not a whole number"))
        };
        let index = number(index_var, &index)?;
        let count =
            env(count_var).ok_or_else(|| format!("{index_var} is set but {count_var} is not"))?;
        let count = number(count_var, &count)?;
        let min = match min_var.and_then(|v| env(v).map(|text| (v, text))) {
            Some((var, text)) => number(var, &text)?,
            None => 0,
        };
        let index = index
            .checked_sub(min)
            .ok_or_else(|| format!("{index_var} is below {}", min_var.unwrap_or("0")))?;
        return Shard::new(index, count).ok_or_else(|| {
            format!("{index_var}={index} (from 0) is not below {count_var}={count}")
        });
    }
    Err(
        "no shard in the environment: set COORDINATOR_SHARD_INDEX and COORDINATOR_SHARD_COUNT, \
         or run as a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, JOB_COMPLETIONS) \
         or a Slurm job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT)"
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn kubernetes_indexed_jobs_name_their_shard() {
        let vars = [("JOB_COMPLETION_INDEX", "2"), ("JOB_COMPLETIONS", "4")];
        assert_eq!(shard_from_env(env(&vars)), Ok(Shard { index: 2, count: 4 }));
    }

    #[test]
    fn slurm_arrays_count_from_their_minimum() {
        let vars = [
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert_eq!(shard_from_env(env(&vars)), Ok(Shard { index: 4, count: 8 }));
    }

    #[test]
    fn our_own_variables_come_first() {
        let vars = [
            ("COORDINATOR_SHARD_INDEX", "0"),
            ("COORDINATOR_SHARD_COUNT", "2"),
            ("JOB_COMPLETION_INDEX", "1"),
            ("JOB_COMPLETIONS", "3"),
        ];
        assert_eq!(shard_from_env(env(&vars)), Ok(Shard { index: 0, count: 2 }));
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        assert!(
            shard_from_env(env(&[]))
                .unwrap_err()
                .contains("JOB_COMPLETION_INDEX")
        );
        let half = [("JOB_COMPLETION_INDEX", "1")];
        assert!(
            shard_from_env(env(&half))
                .unwrap_err()
                .contains("JOB_COMPLETIONS is not")
        );
        let bad = [
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        assert!(
            shard_from_env(env(&bad))
                .unwrap_err()
                .contains("SLURM_ARRAY_TASK_ID=x")
        );
        let over = [
            ("COORDINATOR_SHARD_INDEX", "3"),
            ("COORDINATOR_SHARD_COUNT", "3"),
        ];
        assert!(
            shard_from_env(env(&over))
                .unwrap_err()
                .contains("not below")
        );
    }
}
