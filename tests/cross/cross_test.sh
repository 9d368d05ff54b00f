#!/bin/sh
# cross_test.sh: runs the object files `teslac build` emits on other architectures and checks
# them against the host's (issue 9). For each target it builds NAME.o + NAME.h,
#
#   host      teslac build SPEC --weights W -o DIR/host/NAME.o
#   aarch64   ... --target aarch64-linux-gnu                          run under qemu-aarch64
#   m4        ... --target thumbv7em-none-eabihf --cpu cortex-m4      bare metal, run under
#             qemu-system-arm -M mps2-an386 (Cortex-M4 + FPU) with semihosting
#
# checks the object (readelf -h: ELF class and machine; on the M4 readelf -A: Tag_CPU_arch
# v7E-M and Tag_ABI_VFP_args "VFP registers", the hard-float calling convention; nm -u: the
# undefined symbols are a subset of the target's allowed libc/libm names), links it with
# run_infer.c (Linux) or m4/{startup,fw_main}.c + inputs.c (bare metal), runs N input samples
# through <name>_infer and compares every probability with the host's within TOL (absolute,
# f32cmp.c). The host run is the reference, so the host target always runs.
#
#   tests/cross/cross_test.sh [OPTIONS] TESLAC SPEC WEIGHTS
#   tests/cross/cross_test.sh [OPTIONS] --objects-from DIR [--name NAME]
#
#   --objects-from DIR  take DIR/{host,aarch64,m4}/NAME.o and NAME.h instead of running
#                       `teslac build` (also $CROSS_OBJECTS_FROM); TESLAC SPEC WEIGHTS optional
#   --name NAME         the model's name (default: SPEC's `name:`, or the one DIR/host/*.o)
#   --targets LIST      comma-separated, of host,aarch64,m4 (default all; host always runs)
#   --inputs F.f32      N samples, raw little-endian float32 (default: N generated samples,
#                       uniform in [0, 1), the same on every run)
#   --n N               number of samples (default 10)
#   --tol T             absolute tolerance against the host (default 1e-5)
#   --timeout S         seconds for each program run (default 120)
#   --work DIR          build and run in DIR, and keep it (default: a temporary directory,
#                       removed when every target passes, kept and named otherwise)
#
# Environment: CC (cc), AARCH64_CC (aarch64-linux-gnu-gcc), ARM_CC (arm-none-eabi-gcc),
# QEMU_AARCH64 (qemu-aarch64), QEMU_ARM (qemu-system-arm), AARCH64_SYSROOT
# (/usr/aarch64-linux-gnu), READELF, NM; CROSS_ALLOW_EXTRA: more allowed undefined symbols
# (space-separated, every target).
#
# Exit status: 0 every target passed; 1 a target failed; 2 the command line; 77 (meson's
# "skipped") a tool a selected target needs is missing: "SKIP: <tool> not found".

here=$(cd "$(dirname "$0")" && pwd)
CC=${CC:-cc}
AARCH64_CC=${AARCH64_CC:-aarch64-linux-gnu-gcc}
ARM_CC=${ARM_CC:-arm-none-eabi-gcc}
QEMU_AARCH64=${QEMU_AARCH64:-qemu-aarch64}
QEMU_ARM=${QEMU_ARM:-qemu-system-arm}
AARCH64_SYSROOT=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
READELF=${READELF:-readelf}
NM=${NM:-nm}

M4_FLAGS="-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16"

# ---- the allowed undefined symbols -------------------------------------------------------
LIBC="memcpy memmove memset memcmp"
LIBM_F="expf exp2f expm1f logf log2f log10f log1pf powf sqrtf cbrtf hypotf tanhf sinhf coshf
  sinf cosf tanf asinf acosf atanf atan2f erff erfcf fabsf fmaxf fminf fmaf fmodf floorf ceilf
  roundf truncf rintf nearbyintf lrintf lroundf ldexpf frexpf copysignf"
LIBM_D="exp exp2 expm1 log log2 log10 log1p pow sqrt cbrt hypot tanh sinh cosh sin cos tan
  asin acos atan atan2 erf erfc fabs fmax fmin fma fmod floor ceil round trunc rint nearbyint
  lrint lround ldexp frexp copysign"
# host and aarch64 Linux: libc + libm (float and double); _GLOBAL_OFFSET_TABLE_ is the
# linker's own (x86-64 PIC code names it)
ALLOW_LINUX="$LIBC $LIBM_F $LIBM_D _GLOBAL_OFFSET_TABLE_ $CROSS_ALLOW_EXTRA"
# bare metal: the memory functions (also under their AEABI names, which LLVM calls on
# *-eabi targets; newlib has them) and libm's float functions only: a double function or a
# soft-float helper (__aeabi_d*, __aeabi_f*) means double or soft-float code on the M4; and
# the compiler runtime's 64-bit integer division (__aeabi_[u]ldivmod: libgcc, which every
# arm-none-eabi link has; not libc), which index arithmetic in 64 bits needs on a 32-bit core
ALLOW_M4="memcpy memmove memset __aeabi_uldivmod __aeabi_ldivmod
  __aeabi_memcpy __aeabi_memcpy4 __aeabi_memcpy8 __aeabi_memmove __aeabi_memmove4
  __aeabi_memmove8 __aeabi_memset __aeabi_memset4 __aeabi_memset8 __aeabi_memclr
  __aeabi_memclr4 __aeabi_memclr8 $LIBM_F $CROSS_ALLOW_EXTRA"

# ---- command line --------------------------------------------------------------------------
usage() {
  sed -n 's/^#   tests\/cross\//usage: tests\/cross\//p' "$0" >&2
  echo "(options: see the comment at the top of $0)" >&2
  exit 2
}
objects_from=${CROSS_OBJECTS_FROM:-} name='' targets='host,aarch64,m4' inputs='' n=10
tol=1e-5 tmo=120 work='' keep=0
teslac='' spec='' weights='' npos=0
while [ $# -gt 0 ]; do
  case $1 in
    --objects-from) [ $# -ge 2 ] || usage; objects_from=$2; shift 2 ;;
    --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
    --targets) [ $# -ge 2 ] || usage; targets=$2; shift 2 ;;
    --inputs) [ $# -ge 2 ] || usage; inputs=$2; shift 2 ;;
    --n) [ $# -ge 2 ] || usage; n=$2; shift 2 ;;
    --tol) [ $# -ge 2 ] || usage; tol=$2; shift 2 ;;
    --timeout) [ $# -ge 2 ] || usage; tmo=$2; shift 2 ;;
    --work) [ $# -ge 2 ] || usage; work=$2; keep=1; shift 2 ;;
    -h | --help) usage ;;
    -?*) echo "cross_test.sh: unknown option $1" >&2; usage ;;
    *)
      npos=$((npos + 1))
      case $npos in 1) teslac=$1 ;; 2) spec=$1 ;; 3) weights=$1 ;; *) usage ;; esac
      shift ;;
  esac
done
if [ -n "$objects_from" ]; then
  [ $npos -eq 0 ] || [ $npos -eq 3 ] || usage
  [ -d "$objects_from" ] || { echo "cross_test.sh: --objects-from $objects_from: no such directory" >&2; exit 2; }
  objects_from=$(cd "$objects_from" && pwd)
else
  [ $npos -eq 3 ] || usage
fi
case $n in '' | *[!0-9]* | 0) echo "cross_test.sh: --n must be a positive integer" >&2; exit 2 ;; esac

do_aarch64=0 do_m4=0
for t in $(echo "$targets" | tr ',' ' '); do
  case $t in
    host) ;;
    aarch64) do_aarch64=1 ;;
    m4) do_m4=1 ;;
    *) echo "cross_test.sh: unknown target '$t' (host, aarch64, m4)" >&2; exit 2 ;;
  esac
done

abspath() { case $1 in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }
[ -n "$spec" ] && spec=$(abspath "$spec")
[ -n "$weights" ] && weights=$(abspath "$weights")
[ -n "$inputs" ] && inputs=$(abspath "$inputs")
case $teslac in '' | /*) ;; */*) teslac=$(abspath "$teslac") ;; esac

if [ -z "$name" ]; then
  if [ -n "$spec" ]; then
    name=$(sed -n 's/^name:[[:space:]]*["'\'']\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' "$spec" | head -n 1)
  elif [ -n "$objects_from" ]; then
    set -- "$objects_from"/host/*.o
    [ $# -eq 1 ] && [ -f "$1" ] && name=$(basename "$1" .o)
  fi
fi
[ -n "$name" ] || { echo "cross_test.sh: no model name (give --name NAME)" >&2; exit 2; }
uc=$(printf %s "$name" | tr '[:lower:]' '[:upper:]')

# ---- tools ---------------------------------------------------------------------------------
skip() { echo "SKIP: $1 not found"; exit 77; }
have() { command -v "$1" >/dev/null 2>&1; }
for tool in "$CC" "$READELF" "$NM" timeout od; do have "$tool" || skip "$tool"; done
if [ -z "$objects_from" ]; then
  [ -x "$teslac" ] || have "$teslac" || { echo "cross_test.sh: no teslac at $teslac" >&2; exit 2; }
fi
if [ $do_aarch64 = 1 ]; then
  have "$AARCH64_CC" || skip "$AARCH64_CC"
  have "$QEMU_AARCH64" || skip "$QEMU_AARCH64"
  [ -d "$AARCH64_SYSROOT/lib" ] || skip "aarch64 sysroot $AARCH64_SYSROOT (libc6-dev-arm64-cross)"
fi
if [ $do_m4 = 1 ]; then
  have "$ARM_CC" || skip "$ARM_CC"
  have "$QEMU_ARM" || skip "$QEMU_ARM"
  "$QEMU_ARM" -machine help 2>/dev/null | grep -q '^mps2-an386 ' || skip "$QEMU_ARM machine mps2-an386"
  # shellcheck disable=SC2086
  case $("$ARM_CC" $M4_FLAGS -print-file-name=libm.a) in
    /*) ;; *) skip "newlib for $ARM_CC (libnewlib-arm-none-eabi)" ;;
  esac
fi
# a target's own nm where there is one (the host's nm may not read every ELF machine)
nm_for() { if have "$1-nm"; then echo "$1-nm"; else echo "$NM"; fi; }

# ---- work directory ------------------------------------------------------------------------
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/cross_test.XXXXXX") || exit 2
else
  mkdir -p "$work" || exit 2
  work=$(cd "$work" && pwd)
fi
log="$work/log"
: >"$log"
failed='' passed=''
finish() {
  echo
  [ -n "$passed" ] && echo "PASS:$passed"
  if [ -n "$failed" ]; then
    echo "FAIL:$failed (work directory kept: $work)"
    exit 1
  fi
  if [ $keep = 1 ]; then echo "work directory: $work"; else rm -rf "$work"; fi
  exit 0
}
fail() { # TARGET MESSAGE...
  t=$1; shift
  echo "  FAIL [$t] $*"
  case " $failed " in *" $t "*) ;; *) failed="$failed $t" ;; esac
}
run() { # command...: it and its output to the log; the last one's also to $work/last
  echo "\$ $*" >"$work/last"
  "$@" >>"$work/last" 2>&1
  rc=$?
  cat "$work/last" >>"$log"
  return $rc
}
show_log_tail() { # the last command run and the end of its output
  sed -n '1s/^/    | /p' "$work/last"
  sed 1d "$work/last" | tail -n 12 | sed 's/^/    | /'
}

echo "cross_test: model $name, targets host$( [ $do_aarch64 = 1 ] && printf ' aarch64')$( [ $do_m4 = 1 ] && printf ' m4'), $n samples, tol $tol"
echo "  work: $work"

# ---- host tools: f32cmp ---------------------------------------------------------------------
run "$CC" -std=c99 -O2 "$here/f32cmp.c" -lm -o "$work/f32cmp" || {
  show_log_tail; fail host "cannot build f32cmp.c"; finish; }
f32cmp=$work/f32cmp

# ---- get the objects -----------------------------------------------------------------------
get_object() { # TARGET: DIR/TARGET/NAME.{o,h}; 0 on success
  t=$1 d=$work/$1
  mkdir -p "$d"
  rm -f "$d/$name.o" "$d/$name.h"
  if [ -n "$objects_from" ]; then
    cp "$objects_from/$t/$name.o" "$objects_from/$t/$name.h" "$d/" 2>>"$log" || {
      fail "$t" "no $objects_from/$t/$name.o and $name.h"; return 1; }
  else
    case $t in
      host) set -- ;;
      aarch64) set -- --target aarch64-linux-gnu ;;
      m4) set -- --target thumbv7em-none-eabihf --cpu cortex-m4 ;;
    esac
    run "$teslac" build "$spec" --weights "$weights" -o "$d/$name.o" "$@" || {
      show_log_tail; fail "$t" "teslac build $* failed"; return 1; }
    [ -f "$d/$name.o" ] || { fail "$t" "teslac build wrote no $name.o"; return 1; }
    [ -f "$d/$name.h" ] || { fail "$t" "teslac build wrote no $name.h next to $name.o"; return 1; }
  fi
  return 0
}

# the header's five numbers (BATCH INPUT_SIZE OUTPUT_SIZE ACTIVATIONS_SIZE ALIGNMENT), by
# compiling it on the host; the prototype is checked by compiling a call
probe_header() { # TARGET -> sets hdr_vals; 0 on success
  t=$1 d=$work/$1
  cat >"$d/probe.c" <<EOF
#include <stdio.h>
#include "$name.h"
static void (*check_prototype)(const float *, float *, int, void *) = ${name}_infer;
int main(void) {
  (void)check_prototype;
  printf("%ld %ld %ld %ld %ld\n", (long)(${uc}_BATCH), (long)(${uc}_INPUT_SIZE),
         (long)(${uc}_OUTPUT_SIZE), (long)(${uc}_ACTIVATIONS_SIZE), (long)(${uc}_ALIGNMENT));
  return 0;
}
void ${name}_infer(const float *x, float *y, int n, void *scratch) { (void)x; (void)y; (void)n; (void)scratch; }
EOF
  if ! run "$CC" -std=c99 -Werror=incompatible-pointer-types -I"$d" "$d/probe.c" -o "$d/probe" ||
    ! hdr_vals=$("$d/probe"); then
    show_log_tail
    fail "$t" "$name.h does not define ${uc}_BATCH, _INPUT_SIZE, _OUTPUT_SIZE, _ACTIVATIONS_SIZE, _ALIGNMENT and ${name}_infer(const float *, float *, int, void *)"
    return 1
  fi
  return 0
}

check_elf() { # TARGET CLASS MACHINE
  t=$1 o=$work/$1/$name.o
  h=$("$READELF" -h "$o" 2>>"$log") || { fail "$t" "readelf -h cannot read $name.o"; return 1; }
  cls=$(echo "$h" | sed -n 's/^ *Class: *//p')
  mach=$(echo "$h" | sed -n 's/^ *Machine: *//p')
  typ=$(echo "$h" | sed -n 's/^ *Type: *\([A-Z]*\).*/\1/p')
  data=$(echo "$h" | sed -n 's/^ *Data: *//p')
  ok=0
  [ "$cls" = "$2" ] || { fail "$t" "$name.o: class $cls, expected $2"; ok=1; }
  [ "$mach" = "$3" ] || { fail "$t" "$name.o: machine '$mach', expected '$3'"; ok=1; }
  [ "$typ" = REL ] || { fail "$t" "$name.o: type $typ, expected REL (a relocatable object)"; ok=1; }
  case $data in *little*) ;; *) fail "$t" "$name.o: $data, expected little endian"; ok=1 ;; esac
  [ $ok = 0 ] && echo "  [$t] readelf -h: $cls, $mach, $typ"
  return $ok
}

check_undef() { # TARGET NM "ALLOWED SYMBOLS"
  t=$1 nmt=$2
  # shellcheck disable=SC2086,SC2116
  allowed=" $(echo $3) "
  und=$("$nmt" -u "$work/$t/$name.o" 2>>"$log" | awk '{print $NF}' | sort -u) || {
    fail "$t" "nm -u cannot read $name.o"; return 1; }
  bad=''
  for s in $und; do
    case $allowed in *" $s "*) ;; *) bad="$bad $s" ;; esac
  done
  if [ -n "$bad" ]; then
    hint=''
    case $bad in *__aeabi_unwind_cpp_pr*) hint="$hint; __aeabi_unwind_cpp_pr*: .ARM.exidx unwind entries (the functions are not nounwind), they pull libgcc's unwinder in" ;; esac
    case $bad in *__aeabi_d* | *__aeabi_f* | *__aeabi_i2f* | *__aeabi_l2f*) hint="$hint; __aeabi_d*/__aeabi_f*: double or soft-float arithmetic" ;; esac
    fail "$t" "undefined symbols outside the allowed list:$bad$hint"
    return 1
  fi
  echo "  [$t] nm -u: $(echo "$und" | tr '\n' ' ' | sed 's/ $//')"
  return 0
}

check_m4_attrs() {
  a=$("$READELF" -A "$work/m4/$name.o" 2>>"$log")
  ok=0
  echo "$a" | grep -q 'Tag_ABI_VFP_args: VFP registers' || {
    fail m4 "$name.o: no 'Tag_ABI_VFP_args: VFP registers' (not the hard-float ABI; readelf -A)"; ok=1; }
  echo "$a" | grep -q 'Tag_CPU_arch: v7E-M' || {
    fail m4 "$name.o: Tag_CPU_arch is not v7E-M (Cortex-M4): $(echo "$a" | grep Tag_CPU_arch: | tr -s ' ')"; ok=1; }
  echo "$a" | grep -q 'Tag_CPU_arch_profile: Microcontroller' || {
    fail m4 "$name.o: Tag_CPU_arch_profile is not Microcontroller"; ok=1; }
  fp=$(echo "$a" | sed -n 's/^ *Tag_FP_arch: *//p')
  [ $ok = 0 ] && echo "  [m4] readelf -A: v7E-M, VFP registers, FP arch ${fp:-none}"
  return $ok
}

# links with CC, falling back to -no-pie (a non-PIC object in a PIE-by-default toolchain)
link_linux() { # TARGET CC OUT
  t=$1 cc=$2 out=$3 d=$work/$1
  set -- -std=c99 -O2 -I"$d" -DMODEL_H="\"$name.h\"" -DMODEL="$name" -DMODEL_UC="$uc" \
    "$here/run_infer.c" "$d/$name.o" -lm -o "$out"
  run "$cc" "$@" && return 0
  if run "$cc" -no-pie "$@"; then
    echo "  [$t] note: $name.o does not link into a PIE (not position-independent); linked with -no-pie"
    return 0
  fi
  show_log_tail
  fail "$t" "linking run_infer.c with $name.o failed"
  return 1
}

compare() { # TARGET FILE
  res=$("$f32cmp" -t "$tol" -r "$out_size" "$work/host/y.f32" "$2" 2>&1)
  st=$?
  echo "$res" | sed "s/^/  [$1] /"
  [ $st = 0 ] || { fail "$1" "outputs differ from the host's"; return 1; }
  return 0
}

# ---- host: the reference ------------------------------------------------------------------
if ! get_object host || ! probe_header host; then finish; fi
# shellcheck disable=SC2086
set -- $hdr_vals
batch=$1 in_size=$2 out_size=$3 act_size=$4 align=$5
echo "  [host] $name.h: batch $batch, input $in_size, output $out_size, scratch $act_size bytes, align $align"
host_vals=$hdr_vals

if [ -n "$inputs" ]; then
  [ -r "$inputs" ] || { echo "cross_test.sh: cannot read $inputs" >&2; exit 2; }
  sz=$(wc -c <"$inputs" | tr -d ' ')
  [ "$sz" -eq $((n * in_size * 4)) ] || {
    fail host "$inputs: $sz bytes, expected $n samples x $in_size floats x 4"; finish; }
  cp "$inputs" "$work/x.f32"
else
  "$f32cmp" -g $((n * in_size)) 1 "$work/x.f32" || { fail host "cannot write inputs"; finish; }
fi

host_elf_machine() { # the host's ELF machine, from an object the host cc compiles
  echo 'int cross_probe;' >"$work/host/machine.c"
  "$CC" -c "$work/host/machine.c" -o "$work/host/machine.o" 2>>"$log" &&
    "$READELF" -h "$work/host/machine.o" | sed -n 's/^ *Machine: *//p'
}
host_machine=$(host_elf_machine)
host_class=$("$READELF" -h "$work/host/machine.o" 2>/dev/null | sed -n 's/^ *Class: *//p')
check_elf host "$host_class" "$host_machine"
check_undef host "$NM" "$ALLOW_LINUX"
if link_linux host "$CC" "$work/host/run_infer" &&
  run timeout "$tmo" "$work/host/run_infer" "$work/x.f32" "$work/host/y.f32" "$n"; then
  res=$("$f32cmp" -t "$tol" -r "$out_size" "$work/host/y.f32" "$work/host/y.f32" 2>&1) || {
    echo "$res" | sed 's/^/  [host] /'; fail host "the host's outputs are not probabilities"; }
  echo "  [host] ran: $work/host/run_infer x.f32 y.f32 $n"
else
  show_log_tail
  fail host "run_infer failed"
fi
case " $failed " in *" host "*) echo "  (no reference: the other targets are not run)"; finish ;; esac
passed="$passed host"

same_header() { # TARGET: sizes must match the host's (batch and alignment may differ)
  # shellcheck disable=SC2086
  set -- "$1" $hdr_vals
  if [ "$3" != "$in_size" ] || [ "$4" != "$out_size" ]; then
    fail "$1" "$name.h: input $3, output $4; the host's: $in_size, $out_size"
    return 1
  fi
  [ "$hdr_vals" = "$host_vals" ] ||
    echo "  [$1] $name.h: batch $2, input $3, output $4, scratch $5 bytes, align $6"
  return 0
}

# ---- aarch64 Linux under qemu-aarch64 --------------------------------------------------------
if [ $do_aarch64 = 1 ]; then
  echo
  if get_object aarch64 && probe_header aarch64 && same_header aarch64; then
    check_elf aarch64 ELF64 AArch64
    check_undef aarch64 "$(nm_for aarch64-linux-gnu)" "$ALLOW_LINUX"
    if link_linux aarch64 "$AARCH64_CC" "$work/aarch64/run_infer"; then
      echo "  [aarch64] ran: $QEMU_AARCH64 -L $AARCH64_SYSROOT $work/aarch64/run_infer x.f32 y.f32 $n"
      if run timeout "$tmo" "$QEMU_AARCH64" -L "$AARCH64_SYSROOT" "$work/aarch64/run_infer" \
        "$work/x.f32" "$work/aarch64/y.f32" "$n"; then
        compare aarch64 "$work/aarch64/y.f32"
      else
        st=$?
        show_log_tail
        fail aarch64 "run_infer under $QEMU_AARCH64 failed (exit status $st; 124: timeout)"
      fi
    fi
  fi
  case " $failed " in *" aarch64 "*) ;; *) passed="$passed aarch64" ;; esac
fi

# ---- Cortex-M4 bare metal under qemu-system-arm -M mps2-an386 -------------------------------
if [ $do_m4 = 1 ]; then
  echo
  d=$work/m4
  if get_object m4 && probe_header m4 && same_header m4; then
    check_elf m4 ELF32 ARM
    check_m4_attrs
    check_undef m4 "$(nm_for arm-none-eabi)" "$ALLOW_M4"
    # shellcheck disable=SC2086
    if sh "$here/m4/gen_inputs.sh" "$work/x.f32" "$n" "$d/inputs.c" 2>>"$log" &&
      run "$ARM_CC" $M4_FLAGS -std=c99 -O2 -ffunction-sections -fdata-sections \
        -I"$d" -I"$here/m4" -DMODEL_H="\"$name.h\"" -DMODEL="$name" -DMODEL_UC="$uc" \
        -nostartfiles -T "$here/m4/mps2_an386.ld" -Wl,--gc-sections -Wl,-Map="$d/fw.map" \
        "$here/m4/startup.c" "$here/m4/fw_main.c" "$d/inputs.c" "$d/$name.o" -lm -lc -lgcc \
        -o "$d/fw.elf"; then
      sizes=$("$READELF" -S -W "$d/fw.elf" | sed -n 's/^ *\[ *[0-9]*\] *//p' |
        while read -r sec _ _ _ sz _; do
          case $sec in .text | .rodata | .data | .bss | .psram) printf ' %s %d' "$sec" $((0x$sz)) ;; esac
        done)
      echo "  [m4] linked fw.elf (bytes):$sizes"
      echo "  [m4] ran: $QEMU_ARM -M mps2-an386 -nographic -semihosting-config enable=on,target=native -kernel $d/fw.elf"
      timeout "$tmo" "$QEMU_ARM" -M mps2-an386 -nographic -semihosting-config enable=on,target=native \
        -kernel "$d/fw.elf" </dev/null >"$d/fw.out" 2>"$d/fw.err"
      st=$?
      cat "$d/fw.out" "$d/fw.err" >>"$log"
      if [ $st != 0 ]; then
        tail -n 5 "$d/fw.out" "$d/fw.err" | sed 's/^/    | /'
        fail m4 "the firmware exited with status $st (124: timeout; 3: a fault)"
      elif ! grep -q "^done $n\$" "$d/fw.out"; then
        fail m4 "the firmware did not print 'done $n'"
      else
        sed -n 's/^y //p' "$d/fw.out" >"$d/y.hex"
        compare m4 "hex:$d/y.hex"
      fi
    else
      show_log_tail
      fail m4 "building the firmware failed"
    fi
  fi
  case " $failed " in *" m4 "*) ;; *) passed="$passed m4" ;; esac
fi

finish
