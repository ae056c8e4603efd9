//! What the kernels' blocking needs to know about this CPU beyond its instruction set: the
//! vendor (whose cache hierarchy differs) and the size of a core's L2 cache.

/// True on an Intel CPU (CPUID vendor "GenuineIntel"), read once per process: kernels ask on
/// every call, and CPUID traps to the hypervisor in a VM.
pub(crate) fn is_intel() -> bool {
    static INTEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INTEL.get_or_init(vendor_is_intel)
}

fn vendor_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0 (the vendor) exists on every x86-64 CPU.
        let r = std::arch::x86_64::__cpuid(0);
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&r.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&r.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&r.ecx.to_le_bytes());
        &vendor == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The L2 cache of the first CPU in bytes, as Linux reports it (`None` where it does not).
pub(crate) fn l2_bytes() -> Option<usize> {
    let base = "/sys/devices/system/cpu/cpu0/cache";
    (0..8).find_map(|i| {
        let read = |f: &str| std::fs::read_to_string(format!("{base}/index{i}/{f}")).ok();
        if read("level")?.trim() != "2" || read("type")?.trim() == "Instruction" {
            return None;
        }
        parse_size(read("size")?.trim())
    })
}

/// `"2048K"`, `"1M"` or `"65536"` in bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = num.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n << 10),
        "M" => Some(n << 20),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_size("2048K"), Some(2 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("2G"), None);
        assert_eq!(parse_size("K"), None);
    }
}
