package boot

import "fmt"

// Check runs the whole of Load against memory that keeps nothing: the
// kernel's headers, where it and the initrd go and the command line's
// length are all validated, and no RAM is touched. A backend that loads the
// kernel itself (QEMU) uses it to give the same one-line errors as wisp's
// own loader before it starts anything.
func Check(cfg Config, memSize uint64) error {
	_, err := Load(discardMemory{size: memSize, ram: cfg.RAM}, cfg)
	return err
}

// discardMemory accepts writes inside its RAM regions and forgets them;
// reads return zeros.
type discardMemory struct {
	size uint64
	ram  []Region
}

func (d discardMemory) inRAM(gpa uint64, n int) error {
	for _, r := range d.ram {
		if r.contains(gpa, uint64(n)) {
			return nil
		}
	}
	return fmt.Errorf("[%#x, +%#x) is outside guest RAM", gpa, n)
}

func (d discardMemory) ReadAt(p []byte, gpa uint64) error {
	if err := d.inRAM(gpa, len(p)); err != nil {
		return err
	}
	clear(p)
	return nil
}

func (d discardMemory) WriteAt(p []byte, gpa uint64) error { return d.inRAM(gpa, len(p)) }

func (d discardMemory) Size() uint64 { return d.size }
