//! Pod networking: a host bridge holding the gateway address and one veth pair per pod, so pods
//! reach each other and the host, and the host reaches every pod IP.

use std::net::Ipv4Addr;

use crate::host;
use crate::ipam::Cidr;

/// A network command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating or configuring the bridge failed.
    #[error("failed to set up bridge {BRIDGE}: {0}")]
    Bridge(#[source] host::Error),
    /// Creating or configuring a pod's veth pair failed.
    #[error("failed to connect pod IP {ip} to {BRIDGE}: {source}")]
    Attach {
        ip: Ipv4Addr,
        #[source]
        source: host::Error,
    },
}

/// Host bridge name; short, as Linux limits interface names to 15 bytes.
pub const BRIDGE: &str = "ropbr0";
/// Prefix of the host ends of pod veth pairs; anything so named belongs to this agent.
pub const VETH_PREFIX: &str = "ropv";

#[derive(Debug, Clone)]
pub struct Network {
    cidr: Cidr,
}

impl Network {
    pub fn new(cidr: Cidr) -> Self {
        Self { cidr }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.gateway()
    }

    pub async fn setup(&self) -> Result<(), Error> {
        let address = format!("{}/{}", self.gateway(), self.cidr.prefix());
        if host::run("ip", &["link", "show", BRIDGE]).await.is_err() {
            host::run("ip", &["link", "add", BRIDGE, "type", "bridge"])
                .await
                .map_err(Error::Bridge)?;
        }
        host::run("ip", &["addr", "replace", &address, "dev", BRIDGE])
            .await
            .map_err(Error::Bridge)?;
        host::run("ip", &["link", "set", BRIDGE, "up"])
            .await
            .map_err(Error::Bridge)?;
        Ok(())
    }

    /// The host-side veth name for a pod IP; unique because pod IPs are.
    pub fn veth_name(&self, ip: Ipv4Addr) -> String {
        format!("{VETH_PREFIX}{:x}", self.cidr.host_part(ip))
    }

    /// Gives the network namespace of `pid` an `eth0` with `ip` on the bridge, a default route
    /// via the host, and loopback.
    pub async fn attach(&self, pid: u32, ip: Ipv4Addr) -> Result<String, Error> {
        let veth = self.veth_name(ip);
        let fail = |source| Error::Attach { ip, source };
        // A leftover of a pod that had this IP before a crash.
        let _ = host::run("ip", &["link", "del", &veth]).await;
        let pid_s = pid.to_string();
        host::run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pid_s,
            ],
        )
        .await
        .map_err(fail)?;
        host::run("ip", &["link", "set", &veth, "master", BRIDGE, "up"])
            .await
            .map_err(fail)?;
        // Hairpin, as the kubelet sets it: a pod whose connection to its own Service is DNATed
        // back to itself gets the frame out of the bridge port it came in by (the bridge never
        // sends a frame back out of its ingress port otherwise).
        host::run(
            "ip",
            &[
                "link",
                "set",
                &veth,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ],
        )
        .await
        .map_err(fail)?;
        let address = format!("{ip}/{}", self.cidr.prefix());
        let gateway = self.gateway().to_string();
        host::run(
            "nsenter",
            &[
                "--target",
                &pid_s,
                "--net",
                "--",
                "sh",
                "-c",
                r#"set -e; ip link set lo up; ip addr add "$1" dev eth0; ip link set eth0 up; ip route add default via "$2""#,
                "sh",
                &address,
                &gateway,
            ],
        )
        .await
        .map_err(fail)?;
        Ok(veth)
    }

    /// Removes a pod's veth pair; it usually vanished already with the pod's namespace.
    pub async fn detach(&self, veth: &str) {
        let _ = host::run("ip", &["link", "del", veth]).await;
    }

    /// Removes the bridge and every pod veth, including those of an earlier, crashed run.
    pub async fn reclaim() {
        let links = host::run("ip", &["-o", "link", "show"])
            .await
            .unwrap_or_default();
        for link in our_links(&links) {
            let _ = host::run("ip", &["link", "del", &link]).await;
        }
    }
}

/// Names of this agent's interfaces in `ip -o link show` output (`7: ropv3@if2: <...`).
fn our_links(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| name.starts_with(VETH_PREFIX) || *name == BRIDGE)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_links_only() {
        let output = "1: lo: <LOOPBACK,UP> mtu 65536\n\
                      4: eth0: <BROADCAST> mtu 1400\n\
                      9: ropbr0: <BROADCAST,UP> mtu 1500\n\
                      12: ropv3@if2: <BROADCAST,UP> mtu 1500 master ropbr0\n";
        assert_eq!(our_links(output), ["ropbr0", "ropv3"]);
    }

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let net = Network::new("10.0.0.0/8".parse().unwrap());
        let name = net.veth_name(Ipv4Addr::new(10, 255, 255, 253));
        assert_eq!(name, "ropvfffffd");
        assert!(name.len() <= 15);
    }
}
