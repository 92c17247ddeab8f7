/*
 * virtioblk.c: a freestanding virtio-blk driver, the smallest that still
 * does what Linux's virtio_pci_modern and virtio_blk do with a device:
 *
 *   1. find the function on PCI bus 0 through CONFIG_ADDRESS/CONFIG_DATA
 *      (dword, word and byte accesses), check the host bridge at 00:00.0;
 *   2. size BAR 0, move it to VIRTIO_BAR_ADDR through ECAM, enable memory
 *      decode and bus mastering;
 *   3. walk the capability list for the virtio structures and MSI-X;
 *   4. reset, ACKNOWLEDGE, DRIVER, VERSION_1 only, FEATURES_OK;
 *   5. MSI-X vector 0 to this CPU's LAPIC at VIRTIO_MSI_VECTOR, queue 0
 *      with 8 entries on that vector, DRIVER_OK;
 *   6. write VIRTIO_WRITE_SECTOR, read it back, read VIRTIO_READ_SECTOR,
 *      compare both with the expected patterns, and count one MSI per
 *      completed request.
 *
 * Each step that fails prints VIRTIO_FAIL_MSG, the step and a value, and
 * virtio_main returns non-zero; success prints VIRTIO_OK_MSG. Everything
 * waits by polling with bounded spins; the MSI handler (in
 * virtioblk_start.S) only counts.
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

/* lib64.S (SysV-compatible: argument in edi, clobbers only
 * caller-saved registers). */
void putc64(int c);

/* Counted by the MSI handler. */
volatile u32 virtio_irqs;

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA    0xcfc

#define PCI_VENDOR_DEVICE 0x00
#define PCI_DEVICE_ID     0x02
#define PCI_COMMAND       0x04
#define PCI_STATUS        0x06
#define PCI_CLASS_BASE    0x0b
#define PCI_BAR0          0x10
#define PCI_CAP_PTR       0x34
#define PCI_CMD_MEMORY    0x2
#define PCI_CMD_MASTER    0x4
#define PCI_STATUS_CAPS   0x10
#define PCI_CAP_VENDOR    0x09
#define PCI_CAP_MSIX      0x11
#define PCI_CLASS_BRIDGE  0x06

#define VIRTIO_BLK_ID    0x10421af4 /* device << 16 | vendor */
#define VIRTIO_CAP_COMMON 1
#define VIRTIO_CAP_NOTIFY 2
#define VIRTIO_CAP_DEVICE 4

/* struct virtio_pci_common_cfg */
#define COMMON_DFSELECT     0x00
#define COMMON_DF           0x04
#define COMMON_GFSELECT     0x08
#define COMMON_GF           0x0c
#define COMMON_MSIX_CONFIG  0x10
#define COMMON_NUMQ         0x12
#define COMMON_STATUS       0x14
#define COMMON_CFGGEN       0x15
#define COMMON_Q_SELECT     0x16
#define COMMON_Q_SIZE       0x18
#define COMMON_Q_MSIX       0x1a
#define COMMON_Q_ENABLE     0x1c
#define COMMON_Q_NOFF       0x1e
#define COMMON_Q_DESCLO     0x20
#define COMMON_Q_DESCHI     0x24
#define COMMON_Q_AVAILLO    0x28
#define COMMON_Q_AVAILHI    0x2c
#define COMMON_Q_USEDLO     0x30
#define COMMON_Q_USEDHI     0x34

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER      2
#define STATUS_DRIVER_OK   4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64
#define VERSION_1_HIGH     1 /* feature bit 32 */
#define NO_VECTOR          0xffff

#define MSIX_ENABLE        0x8000
#define MSIX_FUNCTION_MASK 0x4000
#define LAPIC_ID           0x20
#define LAPIC_SVR          0xf0
#define MSI_ADDRESS        0xfee00000u

#define QSIZE          8
#define DESC_F_NEXT    1
#define DESC_F_WRITE   2
#define BLK_T_IN       0
#define BLK_T_OUT      1
#define BLK_S_OK       0
#define SECTOR         512

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline u8 rd8(u64 a) { return *(volatile u8 *)a; }
static inline u16 rd16(u64 a) { return *(volatile u16 *)a; }
static inline u32 rd32(u64 a) { return *(volatile u32 *)a; }
static inline void wr8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline void wr16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void wr32(u64 a, u32 v) { *(volatile u32 *)a = v; }

/* The device reads the rings from another thread: stores must reach
 * memory in program order, and the compiler must not cache loads. */
static inline void mb(void) { __asm__ volatile("mfence" : : : "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" : : : "memory"); }

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, unsigned long n)
{
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
	u8 *p = d;
	const u8 *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

static void puts(const char *s)
{
	while (*s)
		putc64(*s++);
}

static void puthex(u64 v)
{
	int shift = 60;
	puts("0x");
	while (shift > 0 && ((v >> shift) & 0xf) == 0)
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		putc64("0123456789abcdef"[(v >> shift) & 0xf]);
}

static int fail(const char *step, u64 value)
{
	puts(VIRTIO_FAIL_MSG);
	puts(step);
	putc64(' ');
	puthex(value);
	putc64('\n');
	return 1;
}

/* Called from virtioblk_start.S for a CPU exception; power-off follows. */
void guest_exception(u64 vector)
{
	fail("cpu exception", vector);
}

/* Type-1 configuration access to bus 0, function 0 of slot dev. */
static void cfg_select(int dev, int reg)
{
	outl(PCI_CONFIG_ADDRESS, 0x80000000u | (u32)dev << 11 | (u32)(reg & 0xfc));
}
static u32 cfg_read32(int dev, int reg) { cfg_select(dev, reg); return inl(PCI_CONFIG_DATA); }
static u16 cfg_read16(int dev, int reg) { cfg_select(dev, reg); return inw(PCI_CONFIG_DATA + (reg & 2)); }
static u8 cfg_read8(int dev, int reg) { cfg_select(dev, reg); return inb(PCI_CONFIG_DATA + (reg & 3)); }
static void cfg_write32(int dev, int reg, u32 v) { cfg_select(dev, reg); outl(PCI_CONFIG_DATA, v); }
static void cfg_write16(int dev, int reg, u16 v) { cfg_select(dev, reg); outw(PCI_CONFIG_DATA + (reg & 2), v); }

/* ECAM: bus 0, function 0 of slot dev. */
static u64 ecam(int dev, int reg) { return ECAM_BASE + ((u64)dev << 15) + (u64)reg; }

/* The split virtqueue, identity mapped: an address is its own physical
 * address. */
struct desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};
static struct desc ring_desc[QSIZE] __attribute__((aligned(16)));
static struct {
	u16 flags;
	u16 idx;
	u16 ring[QSIZE];
	u16 used_event;
} ring_avail __attribute__((aligned(2)));
static struct {
	u16 flags;
	u16 idx;
	struct {
		u32 id;
		u32 len;
	} ring[QSIZE];
	u16 avail_event;
} ring_used __attribute__((aligned(4)));

static struct {
	u32 type;
	u32 reserved;
	u64 sector;
} blk_req;
static u8 blk_data[SECTOR] __attribute__((aligned(SECTOR)));
static u8 blk_status;

static u64 common, notify_addr, device_cfg;

static u8 pattern(int i, int seed) { return (u8)(i * 31 + i / 256 + seed); }

/* request puts one request on the ring, notifies, and waits for it to be
 * used and for its interrupt. It returns 0 or the failure already
 * reported. */
static int request(u32 type, u64 sector)
{
	u16 idx = ring_avail.idx;
	u32 irqs = virtio_irqs;
	u64 spins;

	blk_req.type = type;
	blk_req.reserved = 0;
	blk_req.sector = sector;
	*(volatile u8 *)&blk_status = 0xff;
	ring_desc[0] = (struct desc){(u64)&blk_req, sizeof(blk_req), DESC_F_NEXT, 1};
	ring_desc[1] = (struct desc){(u64)blk_data, SECTOR, DESC_F_NEXT | (type == BLK_T_IN ? DESC_F_WRITE : 0), 2};
	ring_desc[2] = (struct desc){(u64)&blk_status, 1, DESC_F_WRITE, 0};
	ring_avail.ring[idx % QSIZE] = 0;
	mb();
	*(volatile u16 *)&ring_avail.idx = (u16)(idx + 1);
	mb();
	wr16(notify_addr, 0);

	for (spins = VIRTIO_SPINS; *(volatile u16 *)&ring_used.idx != (u16)(idx + 1); spins--) {
		if (spins == 0)
			return fail(type == BLK_T_IN ? "read: used ring" : "write: used ring", *(volatile u16 *)&ring_used.idx);
		cpu_relax();
	}
	mb();
	if (ring_used.ring[idx % QSIZE].id != 0)
		return fail("used id", ring_used.ring[idx % QSIZE].id);
	if (*(volatile u8 *)&blk_status != BLK_S_OK)
		return fail(type == BLK_T_IN ? "read: status" : "write: status", blk_status);
	for (spins = VIRTIO_SPINS; virtio_irqs == irqs; spins--) {
		if (spins == 0)
			return fail("no MSI-X interrupt", irqs);
		cpu_relax();
	}
	return 0;
}

int virtio_main(void)
{
	int dev, i, found = -1;
	int msix = 0;
	u64 bar, notify_mult = 0, msix_table = 0;
	u32 orig, mask, size, hi, lo, gen;
	u16 qmax, noff;
	u8 ptr, st;

	/* 1: the bus. */
	if (cfg_read8(0, PCI_CLASS_BASE) != PCI_CLASS_BRIDGE)
		return fail("host bridge class", cfg_read8(0, PCI_CLASS_BASE));
	for (dev = 0; dev < 32; dev++) {
		if (cfg_read32(dev, PCI_VENDOR_DEVICE) == VIRTIO_BLK_ID) {
			found = dev;
			break;
		}
	}
	if (found < 0)
		return fail("no virtio-blk on bus 0", 0);
	dev = found;
	if (cfg_read16(dev, PCI_DEVICE_ID) != 0x1042)
		return fail("device id as a word", cfg_read16(dev, PCI_DEVICE_ID));

	/* 2: BAR 0. */
	orig = cfg_read32(dev, PCI_BAR0);
	cfg_write32(dev, PCI_BAR0, 0xffffffffu);
	mask = cfg_read32(dev, PCI_BAR0);
	cfg_write32(dev, PCI_BAR0, orig);
	if (mask & 0xf)
		return fail("BAR 0 is not 32-bit memory", mask);
	size = ~mask + 1;
	if (size != VIRTIO_BAR_SIZE)
		return fail("BAR 0 size", size);
	wr32(ecam(dev, PCI_BAR0), VIRTIO_BAR_ADDR);
	if (cfg_read32(dev, PCI_BAR0) != VIRTIO_BAR_ADDR)
		return fail("BAR 0 move", cfg_read32(dev, PCI_BAR0));
	cfg_write16(dev, PCI_COMMAND, PCI_CMD_MEMORY | PCI_CMD_MASTER);
	if ((rd16(ecam(dev, PCI_COMMAND)) & (PCI_CMD_MEMORY | PCI_CMD_MASTER)) != (PCI_CMD_MEMORY | PCI_CMD_MASTER))
		return fail("command", rd16(ecam(dev, PCI_COMMAND)));
	bar = VIRTIO_BAR_ADDR;

	/* 3: capabilities. */
	if (!(cfg_read16(dev, PCI_STATUS) & PCI_STATUS_CAPS))
		return fail("no capability list", cfg_read16(dev, PCI_STATUS));
	ptr = cfg_read8(dev, PCI_CAP_PTR);
	for (i = 0; ptr != 0 && i < 48; i++) {
		u8 id, type;
		u32 off;
		if (ptr < 0x40 || (ptr & 3))
			return fail("capability pointer", ptr);
		id = cfg_read8(dev, ptr);
		if (id == PCI_CAP_MSIX) {
			msix = ptr;
			msix_table = bar + (cfg_read32(dev, ptr + 4) & ~7u);
		} else if (id == PCI_CAP_VENDOR && cfg_read8(dev, ptr + 4) == 0) {
			type = cfg_read8(dev, ptr + 3);
			off = cfg_read32(dev, ptr + 8);
			if (type == VIRTIO_CAP_COMMON)
				common = bar + off;
			else if (type == VIRTIO_CAP_NOTIFY) {
				notify_addr = bar + off;
				notify_mult = cfg_read32(dev, ptr + 16);
			} else if (type == VIRTIO_CAP_DEVICE)
				device_cfg = bar + off;
		}
		ptr = cfg_read8(dev, ptr + 1);
	}
	if (!common || !notify_addr || !device_cfg || !msix)
		return fail("missing capability", (common ? 1 : 0) | (notify_addr ? 2 : 0) | (device_cfg ? 4 : 0) | (msix ? 8 : 0));

	/* 4: handshake. */
	wr8(common + COMMON_STATUS, 0);
	if (rd8(common + COMMON_STATUS) != 0)
		return fail("reset", rd8(common + COMMON_STATUS));
	wr8(common + COMMON_STATUS, STATUS_ACKNOWLEDGE);
	wr8(common + COMMON_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
	wr32(common + COMMON_DFSELECT, 1);
	if (!(rd32(common + COMMON_DF) & VERSION_1_HIGH))
		return fail("no VERSION_1", rd32(common + COMMON_DF));
	wr32(common + COMMON_GFSELECT, 0);
	wr32(common + COMMON_GF, 0);
	wr32(common + COMMON_GFSELECT, 1);
	wr32(common + COMMON_GF, VERSION_1_HIGH);
	wr8(common + COMMON_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
	st = rd8(common + COMMON_STATUS);
	if (!(st & STATUS_FEATURES_OK))
		return fail("FEATURES_OK refused", st);
	do {
		gen = rd8(common + COMMON_CFGGEN);
		lo = rd32(device_cfg);
		hi = rd32(device_cfg + 4);
	} while (gen != rd8(common + COMMON_CFGGEN));
	if (hi == 0 && lo < VIRTIO_MIN_SECTORS)
		return fail("capacity", lo);
	if (rd16(common + COMMON_NUMQ) < 1)
		return fail("no queues", 0);

	/* 5: MSI-X and queue 0. Enabled with the function masked, the entry
	 * programmed, then unmasked, in Linux's order. */
	wr32(0xfee00000u + LAPIC_SVR, 0x100 | 0xff);
	cfg_write16(dev, msix + 2, MSIX_ENABLE | MSIX_FUNCTION_MASK);
	wr32(msix_table + 0, MSI_ADDRESS | (rd32(0xfee00000u + LAPIC_ID) >> 24) << 12);
	wr32(msix_table + 4, 0);
	wr32(msix_table + 8, VIRTIO_MSI_VECTOR);
	wr32(msix_table + 12, 0);
	cfg_write16(dev, msix + 2, MSIX_ENABLE);
	wr16(common + COMMON_MSIX_CONFIG, NO_VECTOR);

	wr16(common + COMMON_Q_SELECT, 0);
	qmax = rd16(common + COMMON_Q_SIZE);
	if (qmax < QSIZE)
		return fail("queue too small", qmax);
	wr16(common + COMMON_Q_SIZE, QSIZE);
	wr16(common + COMMON_Q_MSIX, 0);
	if (rd16(common + COMMON_Q_MSIX) != 0)
		return fail("queue vector refused", rd16(common + COMMON_Q_MSIX));
	wr32(common + COMMON_Q_DESCLO, (u32)(u64)ring_desc);
	wr32(common + COMMON_Q_DESCHI, 0);
	wr32(common + COMMON_Q_AVAILLO, (u32)(u64)&ring_avail);
	wr32(common + COMMON_Q_AVAILHI, 0);
	wr32(common + COMMON_Q_USEDLO, (u32)(u64)&ring_used);
	wr32(common + COMMON_Q_USEDHI, 0);
	wr16(common + COMMON_Q_ENABLE, 1);
	noff = rd16(common + COMMON_Q_NOFF);
	notify_addr += (u64)noff * notify_mult;
	wr8(common + COMMON_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
	st = rd8(common + COMMON_STATUS);
	if ((st & STATUS_NEEDS_RESET) || !(st & STATUS_DRIVER_OK))
		return fail("DRIVER_OK", st);
	__asm__ volatile("sti");

	/* 6: I/O. */
	for (i = 0; i < SECTOR; i++)
		blk_data[i] = pattern(i, VIRTIO_WRITE_SEED);
	if (request(BLK_T_OUT, VIRTIO_WRITE_SECTOR))
		return 1;
	memset(blk_data, 0, SECTOR);
	if (request(BLK_T_IN, VIRTIO_WRITE_SECTOR))
		return 1;
	for (i = 0; i < SECTOR; i++)
		if (blk_data[i] != pattern(i, VIRTIO_WRITE_SEED))
			return fail("read back differs at byte", (u64)i);
	if (request(BLK_T_IN, VIRTIO_READ_SECTOR))
		return 1;
	for (i = 0; i < SECTOR; i++)
		if (blk_data[i] != pattern(i, VIRTIO_READ_SEED))
			return fail("host sector differs at byte", (u64)i);
	__asm__ volatile("cli");
	if (virtio_irqs != 3)
		return fail("interrupt count", virtio_irqs);
	/* Leave the device reset, as a driver does on shutdown. */
	wr8(common + COMMON_STATUS, 0);
	puts(VIRTIO_OK_MSG);
	return 0;
}
