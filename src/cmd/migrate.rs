//! `cdrflow migrate`: creates or upgrades cdrflow's ClickHouse schema.

use anyhow::{Result, bail};

use super::ClickHouseArgs;

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Print the connection settings (password redacted) and the migrations cdrflow knows,
    /// and exit without connecting.
    #[arg(long, conflicts_with = "print")]
    dry_run: bool,
    /// Create the cluster layout on this ClickHouse cluster (remote_servers name): ON CLUSTER,
    /// ReplicatedMergeTree tables and Distributed tables over them (see deploy/clickhouse-cluster/).
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,
    /// Print every statement (of --cluster's layout if given) and exit without connecting.
    #[arg(long)]
    print: bool,
}

pub fn run(a: MigrateArgs) -> Result<()> {
    let cfg = a.clickhouse.config()?;
    if let Some(c) = &a.cluster
        && !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("--cluster {c}: a cluster name from remote_servers (letters, digits, _ and -)");
    }
    if a.print {
        let stmts = match &a.cluster {
            Some(c) => cdrflow_schemas::sql::cluster_schema(&cfg.database, c),
            None => std::iter::once(cdrflow_schemas::sql::BOOTSTRAP)
                .chain(cdrflow_schemas::sql::MIGRATIONS.iter().map(|m| m.sql))
                .flat_map(|t| cdrflow_schemas::sql::statements(&cdrflow_schemas::sql::for_database(t, &cfg.database)))
                .collect(),
        };
        for s in stmts {
            println!("{s};\n");
        }
        return Ok(());
    }
    if a.dry_run {
        let migrations: Vec<String> =
            cdrflow_schemas::sql::MIGRATIONS.iter().map(|m| format!("{:03}_{}", m.version, m.name)).collect();
        let out = serde_json::json!({
            "worker": "migrate",
            "clickhouse": { "url": cfg.url, "database": cfg.database, "user": cfg.user, "password": cfg.password.as_ref().map(|_| "<set>") },
            "migrations": migrations,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let ch = cdrflow_aggregate::clickhouse::ClickHouse::new(cfg);
    let applied = super::runtime()?.block_on(async {
        ch.ping().await?;
        ch.migrate_on(a.cluster.as_deref()).await
    })?;
    if applied.is_empty() {
        tracing::info!(database = a.clickhouse.database, "schema is up to date");
    }
    Ok(())
}
