//! Parsing of `INFO replication`: the role, the primary followed, the link and the offsets.

/// What a Redis server says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `role:master`.
    Primary,
    /// `role:slave`.
    Replica,
}

impl Role {
    /// The value of the pod's role label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// `master_failover_state`: a `FAILOVER` in progress on a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverState {
    /// `no-failover`.
    None,
    /// `waiting-for-sync`: writes are paused until the target has everything.
    WaitingForSync,
    /// `failover-in-progress`: the target is being promoted.
    InProgress,
}

/// One pod's replication, as its Redis reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReplication {
    /// Its role.
    pub role: Role,
    /// The primary a replica follows.
    pub primary_host: Option<String>,
    /// Its port.
    pub primary_port: Option<u16>,
    /// A replica's link to its primary is up.
    pub link_up: bool,
    /// A replica is loading or receiving a full copy of the primary's data.
    pub syncing: bool,
    /// A primary's `master_repl_offset`, or the offset a replica has processed.
    pub offset: i64,
    /// The replication history the offset belongs to.
    pub replid: String,
    /// A `FAILOVER` in progress.
    pub failover: FailoverState,
    /// Replicas connected to a primary, by IP, with the offset each acknowledged.
    pub replicas: Vec<(String, i64)>,
}

/// Parses the output of `INFO replication`; `None` when it names no role.
pub fn parse_info(text: &str) -> Option<PodReplication> {
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok());
    let role = match field("role")? {
        "master" => Role::Primary,
        "slave" => Role::Replica,
        _ => return None,
    };
    let offset = match role {
        Role::Primary => number("master_repl_offset"),
        Role::Replica => number("slave_repl_offset").or_else(|| number("master_repl_offset")),
    }
    .unwrap_or(0);
    let replicas = text
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .filter_map(|l| {
            let (_, attrs) = l.trim_end().split_once(':')?;
            let attr = |k: &str| {
                attrs
                    .split(',')
                    .filter_map(|a| a.split_once('='))
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v)
            };
            Some((attr("ip")?.to_owned(), attr("offset")?.parse().ok()?))
        })
        .collect();
    Some(PodReplication {
        role,
        primary_host: field("master_host").map(str::to_owned),
        primary_port: field("master_port").and_then(|v| v.parse().ok()),
        link_up: field("master_link_status") == Some("up"),
        syncing: number("master_sync_in_progress").unwrap_or(0) != 0,
        offset,
        replid: field("master_replid").unwrap_or_default().to_owned(),
        failover: match field("master_failover_state") {
            Some("waiting-for-sync") => FailoverState::WaitingForSync,
            Some("failover-in-progress") => FailoverState::InProgress,
            _ => FailoverState::None,
        },
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_primary_with_its_replicas() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=10.244.0.3,port=6379,state=online,offset=1500,lag=0\r\n\
            slave1:ip=10.244.0.4,port=6379,state=wait_bgsave,offset=0,lag=1\r\n\
            master_failover_state:waiting-for-sync\r\nmaster_replid:abc\r\n\
            master_repl_offset:1520\r\n";
        let got = parse_info(info).unwrap();
        assert_eq!(got.role, Role::Primary);
        assert_eq!(got.offset, 1520);
        assert_eq!(got.replid, "abc");
        assert_eq!(got.failover, FailoverState::WaitingForSync);
        assert_eq!(
            got.replicas,
            [
                ("10.244.0.3".to_owned(), 1500),
                ("10.244.0.4".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn reads_a_replica_and_its_link() {
        let info = "role:slave\r\nmaster_host:10.244.0.2\r\nmaster_port:6379\r\n\
            master_link_status:up\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:99\r\n\
            master_failover_state:no-failover\r\nmaster_replid:abc\r\nmaster_repl_offset:99\r\n";
        let got = parse_info(info).unwrap();
        assert_eq!(got.role, Role::Replica);
        assert_eq!(got.primary_host.as_deref(), Some("10.244.0.2"));
        assert_eq!(got.primary_port, Some(6379));
        assert!(got.link_up && !got.syncing);
        assert_eq!(got.offset, 99);
        let down = parse_info("role:slave\nmaster_link_status:down\nmaster_sync_in_progress:1\n");
        let down = down.unwrap();
        assert!(!down.link_up && down.syncing);
        assert_eq!(parse_info("role:sentinel\n"), None);
        assert_eq!(parse_info(""), None);
    }
}
