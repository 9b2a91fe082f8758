#!/usr/bin/env bash
# run-in-vm.sh — run a static linux/amd64 binary (a Go test binary) as root
# inside a throw-away QEMU VM that boots Debian's own kernel with a live
# gpio-sim GPIO chip, so GPIO code meets the real kernel uAPI, not a fake.
#
# Usage:
#   .ci/vm/run-in-vm.sh [--] BINARY [ARGS...]   run BINARY in a fresh VM
#   .ci/vm/run-in-vm.sh --prepare               install packages, build the cache
#   .ci/vm/run-in-vm.sh --missing               print the Debian packages that
#                                               --prepare needs and are missing,
#                                               one a line, for `apt-get install`
#
# Inside the VM the binary runs as root with cwd /gpiovm/work and:
#   GPIOSIM_CHIP=/dev/gpiochipN     the ready chip, label gpio-vm-sim, lines
#                                   named GPIO0..GPIO<n-1> (GPIO21 is offset 21)
#   GPIOSIM_SYSFS=/sys/devices/platform/gpio-sim.0/gpiochipN  (sim_gpioK/{value,pull})
#   GPIOSIM_CONFIGFS, GPIOSIM_LINES, GPIOVM=1; configfs is mounted and gpio-sim
#   loaded, so tests may make more chips (github.com/warthog618/go-gpiosim).
#   Network: loopback only (127.0.0.1, ::1; /etc/hosts maps localhost).
# BINARY's stdout+stderr stream to our stdout; our exit code is BINARY's.
# 124 = timeout, 125 = VM or harness failure (console tail on stderr),
# 130 = interrupted. Works as `go test -exec "$PWD/.ci/vm/run-in-vm.sh"` too.
#
# --prepare (once per machine; ~35 s on a fresh Debian 12) needs root for
# apt-get: it installs qemu-system-x86, busybox-static, cpio, xz-utils,
# binutils, make, gcc and linux-headers-<abi>-amd64, downloads
# linux-image-<abi>-amd64 and linux-source-6.1 (deleted after use), and
# builds gpio-sim.ko out of tree, because Debian 12's kernel ships without
# CONFIG_GPIO_SIM. Not root and packages missing: it prints the sudo line to
# run and exits 125. The cache (~40 MB) is kept in ~/.cache/pimqtt-vm;
# apt/make output goes to its prepare.log, whose tail is printed on failure.
#
# Environment:
#   GPIOVM_CACHE      cache dir (default ~/.cache/pimqtt-vm)
#   GPIOVM_TIMEOUT    seconds for the whole VM run (default 600)
#   GPIOVM_MEM        guest RAM (default 1024M)   GPIOVM_SMP  vCPUs (default nproc, max 4)
#   GPIOVM_LINES      lines on the prepared chip (default 32, max 512)
#   GPIOVM_KERNEL_ABI e.g. 6.1.0-56 (default: the cached one, else linux-image-amd64's)
#   GPIOVM_VERBOSE=1  print the guest console after the run
#
# Everything inside is emulated (TCG, no KVM): code runs 10-100x slower
# than on the host, so timeouts in VM tests need generous margins.
# Design after the gpio-vm harness this project started with; this copy is
# the project's own, so a plain clone runs its real-kernel tests.
set -euo pipefail

CACHE=${GPIOVM_CACHE:-${HOME:-/root}/.cache/pimqtt-vm}
TIMEOUT=${GPIOVM_TIMEOUT:-600}
MEM=${GPIOVM_MEM:-1024M}
NPROC=$(nproc 2>/dev/null || echo 2)
SMP=${GPIOVM_SMP:-$((NPROC > 4 ? 4 : NPROC))}
LINES=${GPIOVM_LINES:-32}
VERBOSE=${GPIOVM_VERBOSE:-0}
BUILD_REV=1 # bump when the cache recipe changes

log() { printf 'gpio-vm: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 125; }

ROOT=0
[ "$(id -u)" != 0 ] || ROOT=1
# Retry flaky downloads; wait for a dpkg lock held by e.g. unattended-upgrades.
APT_OPTS=(-o Acquire::Retries=3 -o DPkg::Lock::Timeout=300)
APT_DL_OPTS=(-o Acquire::Retries=3)
[ "$ROOT" = 0 ] || APT_DL_OPTS+=(-o APT::Sandbox::User=root)

# ---------------------------------------------------------------- packages
APT_LOG= # $CACHE/prepare.log once the cache dir exists: apt/dpkg/make chatter
quiet() { # run "$@" with output to $APT_LOG; on failure show its tail
	local rc=0
	"$@" >>"${APT_LOG:-/dev/null}" 2>&1 || rc=$?
	if [ "$rc" != 0 ] && [ -n "$APT_LOG" ]; then tail -n 25 "$APT_LOG" | sed 's/^/  | /' >&2; fi
	return "$rc"
}
APT_UPDATED=0
apt_update() { # once per run, root only; a failing third-party source must not stop us
	[ "$APT_UPDATED" = 1 ] || [ "$ROOT" = 0 ] && return 0
	APT_UPDATED=1
	log "apt-get update"
	quiet apt-get "${APT_OPTS[@]}" update || log "warning: apt-get update failed; trying with the lists we have"
}
installed_ver() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | sed -n 's/^install ok installed //p'; }
missing_of() { # print those of NAME or NAME=VERSION that are not installed (at that version)
	local p
	for p in "$@"; do
		case $p in
		*=*) [ "$(installed_ver "${p%%=*}")" = "${p#*=}" ] || echo "$p" ;;
		*) [ -n "$(installed_ver "$p")" ] || echo "$p" ;;
		esac
	done
}
need_pkgs() { # install what is missing of "$@" (root), or say what to run
	local missing
	mapfile -t missing < <(missing_of "$@")
	[ ${#missing[@]} = 0 ] && return 0
	[ "$ROOT" = 1 ] || die "missing packages; run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
	log "apt-get install ${missing[*]}"
	if ! quiet env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends "${missing[@]}"; then
		[ "$APT_UPDATED" = 1 ] && die "apt-get install ${missing[*]} failed (log: $APT_LOG)"
		apt_update
		quiet env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends "${missing[@]}" ||
			die "apt-get install ${missing[*]} failed (log: $APT_LOG)"
	fi
}
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/{print $2}'; }
default_abi() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\([0-9][^ ]*\)-amd64$/\1/p' | head -n1; }
RUN_PKGS=(qemu-system-x86 cpio)
BUILD_PKGS=(qemu-system-x86 busybox-static cpio xz-utils binutils make gcc)
kernel_ver() { # $1=abi: the archive's version of that kernel, or ""
	local v
	v=$(candidate "linux-image-$1-amd64")
	[ "$v" = "(none)" ] || echo "$v"
}

# ---------------------------------------------------------------- cache build
# Kernel: Debian's linux-image-<ABI>-amd64 (vmlinuz + modules from the .deb).
# gpio-sim: the in-tree module when the config has CONFIG_GPIO_SIM=m; else
# (Debian 12: "# CONFIG_GPIO_SIM is not set", no IRQ_SIM either) it is built
# out of tree from the same Debian source version (linux-source-X.Y) against
# linux-headers-<ABI>-amd64 of that version, with kernel/irq/irq_sim.c linked in.
# Boot: TCG spends ~4 s decompressing the xz bzImage, so the cache also keeps
# the decompressed ELF vmlinux, which QEMU boots through the PVH entry point.
modfile() { # find NAME(.ko|.ko.xz|.ko.zst) under DIR, '-' and '_' equivalent
	local dir=$1 name=$2 re
	re=$(printf '%s' "$name" | sed 's/[-_]/[-_]/g')
	find "$dir" -regextype posix-extended -regex ".*/${re}\.ko(\.xz|\.zst|\.gz)?" | head -n1
}
copy_mod() { # copy (decompressed) module to $2/NAME.ko, print NAME.ko
	local src=$1 out=$2 base
	base=$(basename "$src"); base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
	case $src in
	*.xz) xz -dc "$src" >"$out/$base" ;;
	*.zst) zstd -qdc "$src" >"$out/$base" ;;
	*.gz) gzip -dc "$src" >"$out/$base" ;;
	*) cp "$src" "$out/$base" ;;
	esac
	echo "$base"
}
add_mod_with_deps() { # $1=ko path, $2=module tree, $3=out dir; appends to $3/load.list (deps first)
	local ko=$1 tree=$2 out=$3 dep f base
	for dep in $(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do
		grep -qx "$dep.ko" "$out/load.list" 2>/dev/null && continue
		f=$(modfile "$tree" "$dep"); [ -n "$f" ] || die "module dependency $dep not found"
		base=$(copy_mod "$f" "$out")
		add_mod_with_deps "$out/$base" "$tree" "$out"
	done
	base=$(basename "$ko")
	[ -f "$out/$base" ] || cp "$ko" "$out/$base"
	grep -qx "$base" "$out/load.list" 2>/dev/null || echo "$base" >>"$out/load.list"
}
extract_vmlinux() { # $1=bzImage $2=out: its xz payload is the ELF vmlinux; keep it if it has a PVH entry
	local img=$1 out=$2 ss po pl off
	ss=$(od -An -tu1 -j 497 -N1 "$img" | tr -d ' '); [ "$ss" != 0 ] || ss=4
	read -r po pl < <(od -An -tu4 -j 584 -N8 "$img") || return 1
	off=$(((ss + 1) * 512 + po))
	[ "$(od -An -tx1 -j "$off" -N6 "$img" | tr -d ' \n')" = fd377a585a00 ] || return 1 # xz magic
	dd if="$img" of="$out.xz" iflag=skip_bytes,count_bytes skip="$off" count="$pl" status=none || return 1
	xz -dc --single-stream "$out.xz" >"$out" 2>/dev/null || { rm -f "$out.xz"; return 1; }
	rm -f "$out.xz"
	[ "$(od -An -tx1 -N4 "$out" | tr -d ' \n')" = 7f454c46 ] || return 1                # ELF
	readelf -n "$out" 2>/dev/null | grep -Eq '\(0x00000012\)|PHYS32_ENTRY' # XEN_ELFNOTE_PHYS32_ENTRY
}

build_cache() {
	local abi=$1 ver=$2 dir=$CACHE/$1 mm work cfg sim f base
	need_pkgs "${BUILD_PKGS[@]}" "linux-headers-$abi-amd64=$ver"
	mm=$(printf '%s' "$abi" | cut -d. -f1,2)
	log "building the VM cache for kernel $abi ($ver) in $dir"
	work=$dir/build
	rm -rf "$work" "$dir/vmlinux"
	mkdir -p "$work/deb" "$work/root/lib/modules" "$work/root/bin" "$work/root/etc"
	(cd "$work/deb" && quiet apt-get download "${APT_DL_OPTS[@]}" "linux-image-$abi-amd64=$ver") ||
		die "apt-get download linux-image-$abi-amd64=$ver failed"
	dpkg-deb -x "$work"/deb/linux-image-*.deb "$work/k"
	cfg=$(echo "$work"/k/boot/config-*)
	cp "$work"/k/boot/vmlinuz-* "$dir/vmlinuz.new"
	cp "$cfg" "$dir/config"
	local mods=$work/root/lib/modules
	: >"$mods/load.list"
	sim=$(sed -n 's/^CONFIG_GPIO_SIM=\(.\)$/\1/p' "$cfg")
	case $sim in
	y) log "CONFIG_GPIO_SIM=y (built in)" ;;
	m)
		log "CONFIG_GPIO_SIM=m (in-tree module)"
		f=$(modfile "$work/k/lib/modules" gpio-sim); base=$(copy_mod "$f" "$mods")
		add_mod_with_deps "$mods/$base" "$work/k/lib/modules" "$mods"
		;;
	*)
		log "CONFIG_GPIO_SIM not set: building gpio-sim.ko out of tree"
		(cd "$work/deb" && quiet apt-get download "${APT_DL_OPTS[@]}" "linux-source-$mm=$ver") ||
			die "apt-get download linux-source-$mm=$ver failed"
		local src=$work/src p=linux-source-$mm
		mkdir -p "$src/m"
		dpkg-deb --fsys-tarfile "$work"/deb/linux-source-*.deb | tar -x -C "$src" "./usr/src/$p.tar.xz"
		rm -f "$work"/deb/linux-source-*.deb
		tar --occurrence=1 -xJf "$src/usr/src/$p.tar.xz" -C "$src" "$p/drivers/gpio/gpio-sim.c" \
			"$p/drivers/gpio/gpiolib.h" "$p/kernel/irq/irq_sim.c"
		rm -f "$src/usr/src/$p.tar.xz"
		cp "$src/$p/drivers/gpio/gpio-sim.c" "$src/m/gpio-sim-main.c"
		cp "$src/$p/drivers/gpio/gpiolib.h" "$src/$p/kernel/irq/irq_sim.c" "$src/m/"
		# irq_to_desc() is not exported to modules: dispatch through the domain.
		sed -i -e 's|^\(\s*\)irqnum = irq_find_mapping(work_ctx->domain, offset);|\1generic_handle_domain_irq(work_ctx->domain, offset);|' \
			-e '/handle_simple_irq(irq_to_desc(irqnum));/d' -e '/^\s*int irqnum;$/d' "$src/m/irq_sim.c"
		! grep -q irq_to_desc "$src/m/irq_sim.c" || die "irq_sim.c patch did not apply"
		printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' >"$src/m/Kbuild"
		quiet make -C "/usr/src/linux-headers-$abi-amd64" M="$src/m" modules ||
			die "building gpio-sim.ko failed (log: $APT_LOG)"
		strip --strip-debug -o "$mods/gpio-sim.ko" "$src/m/gpio-sim.ko"
		add_mod_with_deps "$mods/gpio-sim.ko" "$work/k/lib/modules" "$mods"
		;;
	esac
	if grep -q '^CONFIG_CONFIGFS_FS=m' "$cfg" && ! grep -qx configfs.ko "$mods/load.list"; then
		f=$(modfile "$work/k/lib/modules" configfs); base=$(copy_mod "$f" "$mods")
		sed -i "1i $base" "$mods/load.list"
	fi
	if grep -q '^CONFIG_PVH=y' "$cfg" && extract_vmlinux "$dir/vmlinuz.new" "$dir/vmlinux.new"; then
		log "PVH boot: cached the decompressed vmlinux"
	else
		log "no PVH vmlinux: will boot the bzImage"; rm -f "$dir/vmlinux.new"
	fi
	cp /bin/busybox "$work/root/bin/busybox" # busybox-static
	# What Go's pure resolver and os/user read.
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tgpiovm\n' >"$work/root/etc/hosts"
	printf 'hosts: files dns\n' >"$work/root/etc/nsswitch.conf"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$work/root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/root/etc/group"
	echo gpiovm >"$work/root/etc/hostname"
	(cd "$work/root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$dir/base.cpio.gz.new"
	truncate -s %512 "$dir/base.cpio.gz.new" # the next cpio must start 4-byte aligned
	mv "$dir/vmlinuz.new" "$dir/vmlinuz"; mv "$dir/base.cpio.gz.new" "$dir/base.cpio.gz"
	[ ! -f "$dir/vmlinux.new" ] || mv "$dir/vmlinux.new" "$dir/vmlinux"
	echo "$ver" >"$dir/VERSION"
	tr '\n' ' ' <"$mods/load.list" >"$dir/MODULES"
	rm -rf "$work"
	echo "$BUILD_REV" >"$dir/READY"
	ln -sfn "$abi" "$CACHE/current"
	log "cache ready: $(du -sh "$dir" | cut -f1), modules: $(cat "$dir/MODULES")"
}

is_ready() { [ -f "$1/READY" ] && [ "$(cat "$1/READY")" = "$BUILD_REV" ]; }
cached_abi() { # the ABI of a ready cache to use, or ""
	local abi=${GPIOVM_KERNEL_ABI:-}
	if [ -z "$abi" ] && is_ready "$CACHE/current"; then abi=$(readlink "$CACHE/current"); fi
	if [ -n "$abi" ] && is_ready "$CACHE/$abi"; then echo "$abi"; fi
}
resolve_kernel() { # print "ABI VERSION" of the kernel to build, or fail
	local abi=${GPIOVM_KERNEL_ABI:-} ver
	[ -n "$abi" ] || abi=$(default_abi)
	[ -n "$abi" ] || die "cannot resolve linux-image-amd64 to a kernel ABI (apt lists missing? run: sudo apt-get update)"
	ver=$(kernel_ver "$abi")
	[ -n "$ver" ] || die "no package linux-image-$abi-amd64 in the apt lists (run: sudo apt-get update)"
	echo "$abi $ver"
}
print_missing() { # --missing: what --prepare and a run would install
	local abi ver
	if [ -n "$(cached_abi)" ]; then
		missing_of "${RUN_PKGS[@]}"
		return 0
	fi
	read -r abi ver < <(resolve_kernel) || exit 125
	missing_of "${BUILD_PKGS[@]}"
	# The headers must match the kernel --prepare downloads, which it picks
	# from the apt lists of the moment: after `apt-get update` the
	# metapackage brings exactly those, where a version pinned from older
	# lists might be gone from the archive.
	[ -z "$(missing_of "linux-headers-$abi-amd64=$ver")" ] || echo linux-headers-amd64
}
ensure_cache() {
	local abi ver
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	flock 9
	APT_LOG=$CACHE/prepare.log
	abi=$(cached_abi)
	if [ -z "$abi" ]; then
		# Cold cache: refresh the lists first, so that the versions we pin are
		# the ones the archive serves now (stale lists give 404s).
		: >"$APT_LOG"
		apt_update
		read -r abi ver < <(resolve_kernel) || exit 125
		mkdir -p "$CACHE/$abi"
		build_cache "$abi" "$ver"
	fi
	KDIR=$CACHE/$abi
	need_pkgs "${RUN_PKGS[@]}"
	flock -u 9
	exec 9>&-
}

# ---------------------------------------------------------------- guest init
write_init() { # PID 1 inside the VM; ttyS0 = console/log, ttyS1 = binary output
	cat >"$1" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp USER=root
fail() { echo "GPIOVM_SETUP_ERROR: $*"; echo; echo "GPIOVM_EXIT=125"; sync; poweroff -f; sleep 5; reboot -f; }
mkdir -p /proc /sys /dev /tmp /root /run
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname gpiovm
ip link set lo up || fail "ip link set lo up"
ulimit -n 65536 2>/dev/null
echo "GPIOVM_BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /lib/modules/load.list); do insmod /lib/modules/$m || fail "insmod $m"; done
grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config || fail "mount configfs"
. /gpiovm/env
cfg=/sys/kernel/config/gpio-sim/gpiovm
mkdir $cfg && mkdir $cfg/bank0 || fail "gpio-sim configfs not available"
echo gpio-vm-sim > $cfg/bank0/label
echo $GPIOVM_LINES > $cfg/bank0/num_lines || fail "num_lines"
i=0
while [ $i -lt $GPIOVM_LINES ]; do mkdir $cfg/bank0/line$i && echo GPIO$i > $cfg/bank0/line$i/name; i=$((i+1)); done
echo 1 > $cfg/live || fail "gpio-sim live=1"
dev=$(cat $cfg/dev_name); chip=$(cat $cfg/bank0/chip_name)
[ -c /dev/$chip ] || fail "/dev/$chip missing"
export GPIOSIM_CHIP=/dev/$chip GPIOSIM_SYSFS=/sys/devices/platform/$dev/$chip GPIOSIM_CONFIGFS=$cfg GPIOSIM_LINES=$GPIOVM_LINES GPIOVM=1
echo "GPIOVM_READY $GPIOSIM_CHIP $GPIOSIM_SYSFS uptime=$(cut -d' ' -f1 /proc/uptime)"
stty -F /dev/ttyS1 raw -echo 2>/dev/null
cd /gpiovm/work
sh /gpiovm/run.sh </dev/null >/dev/ttyS1 2>&1
rc=$?
sync
echo; echo "GPIOVM_EXIT=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f; sleep 5; reboot -f
INIT
	chmod 755 "$1"
}

# ---------------------------------------------------------------- main
case ${1:-} in
--prepare) T0=$(date +%s.%N); ensure_cache; log "prepared $KDIR ($(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s)"; exit 0 ;;
--missing) print_missing; exit 0 ;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
--) shift ;;
-*) die "unknown option $1 (see --help)" ;;
esac
[ $# -ge 1 ] || die "usage: run-in-vm.sh [--] BINARY [ARGS...] | --prepare | --missing"
T0=$(date +%s.%N)
ensure_cache
BIN=$1
shift
[ -f "$BIN" ] && [ -x "$BIN" ] || die "$BIN is not an executable file"
if command -v readelf >/dev/null; then
	readelf -h "$BIN" 2>/dev/null | grep -q 'Advanced Micro Devices X86-64' || die "$BIN is not an x86-64 ELF"
	! readelf -l "$BIN" 2>/dev/null | grep -q 'program interpreter' || die "$BIN is dynamically linked: build it with CGO_ENABLED=0"
fi
[[ $LINES =~ ^[0-9]+$ ]] && [ "$LINES" -ge 1 ] && [ "$LINES" -le 512 ] || die "GPIOVM_LINES must be 1..512"

RUN=$(mktemp -d "${TMPDIR:-/tmp}/pimqtt-vm.XXXXXX")
QPID=
cleanup() { [ -z "$QPID" ] || kill "$QPID" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; } # POSIX sh quoting
R=$RUN/root
mkdir -p "$R/gpiovm/bin" "$R/gpiovm/work"
write_init "$R/init"
bname=$(basename "$BIN")
cp "$BIN" "$R/gpiovm/bin/$bname"
printf 'GPIOVM_LINES=%s\n' "$LINES" >"$R/gpiovm/env"
{
	printf 'exec %s' "$(q "/gpiovm/bin/$bname")"
	for a in "$@"; do printf ' %s' "$(q "$a")"; done
	printf '\n'
} >"$R/gpiovm/run.sh"
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$RUN/run.cpio"
cat "$KDIR/base.cpio.gz" "$RUN/run.cpio" >"$RUN/initrd"
rm -rf "$R" "$RUN/run.cpio"

KERNEL=$KDIR/vmlinuz
[ ! -f "$KDIR/vmlinux" ] || KERNEL=$KDIR/vmlinux
CONSOLE=$RUN/console.log
T1=$(date +%s.%N)
set +e
# KVM is not used: where /dev/kvm exists on the CI machines, guests hang.
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -machine pc -m "$MEM" -smp "$SMP" \
	-nodefaults -no-user-config -display none -monitor none -no-reboot \
	-kernel "$KERNEL" -initrd "$RUN/initrd" \
	-append "console=ttyS0 quiet panic=-1 8250.nr_uarts=2 i8042.noaux i8042.nokbd" \
	-serial "file:$CONSOLE" -serial stdio </dev/null &
QPID=$!
wait "$QPID"
QRC=$?
QPID=
set -e
T2=$(date +%s.%N)
if [ "$VERBOSE" = 1 ]; then log "console log:"; tr -d '\r' <"$CONSOLE" | sed 's/^/  | /' >&2; fi
RC=$(tr -d '\r' <"$CONSOLE" | sed -n 's/.*GPIOVM_EXIT=\([0-9]\{1,3\}\).*/\1/p' | tail -n1)
if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
	log "TIMEOUT after ${TIMEOUT}s; console tail:"
	tr -d '\r' <"$CONSOLE" | tail -n 30 | sed 's/^/  | /' >&2
	exit 124
fi
if [ -z "$RC" ]; then
	log "VM ended (qemu rc=$QRC) without an exit marker; console tail:"
	tr -d '\r' <"$CONSOLE" | tail -n 40 | sed 's/^/  | /' >&2
	exit 125
fi
if grep -q GPIOVM_SETUP_ERROR "$CONSOLE"; then
	log "guest setup failed; console tail:"
	tr -d '\r' <"$CONSOLE" | tail -n 30 | sed 's/^/  | /' >&2
fi
uptime_at() { tr -d '\r' <"$CONSOLE" | sed -n "s/.*$1.* uptime=\([0-9.]*\).*/\1/p" | tail -n1; }
READY=$(uptime_at GPIOVM_READY) UP=$(uptime_at GPIOVM_EXIT=)
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
# Wall time until the chip was ready = VM wall time minus what ran after READY.
BOOT=$(awk -v w="$(dt "$T1" "$T2")" -v r="${READY:-0}" -v u="${UP:-0}" 'BEGIN{printf "%.1f", w-(u-r)}')
log "exit $RC; kernel $(basename "$KDIR") ($(basename "$KERNEL")), smp $SMP, mem $MEM; prep $(dt "$T0" "$T1")s, boot ~${BOOT}s, vm $(dt "$T1" "$T2")s (guest uptime ${UP:-?}s)"
exit "$RC"
