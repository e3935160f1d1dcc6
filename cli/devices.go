package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"headinfer/bytesize"
	"headinfer/vk"
)

func devicesCommand() *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list Vulkan devices and what they support; * marks the one that would be used (with --devices, those a split would use)",
		Flags: []cli.Flag{deviceFlag(),
			&cli.StringFlag{Name: "devices", Usage: "a --devices list (e.g. 0,1) whose devices to mark, with their place in the split"}},
		Action: func(c *cli.Context) error {
			devs, err := vk.Devices()
			if err != nil {
				return err
			}
			sels := []string{c.String("device")}
			if s := c.String("devices"); s != "" {
				sels = strings.Split(s, ",")
			}
			places := map[int][]string{} // device index → its places in the list
			for j, sel := range sels {
				i, err := vk.Choose(devs, strings.TrimSpace(sel))
				if err != nil {
					return err
				}
				places[i] = append(places[i], fmt.Sprint(j))
			}
			for i, d := range devs {
				printDevice(c.App.Writer, d, places[i] != nil)
				if len(sels) > 1 && places[i] != nil {
					fmt.Fprintf(c.App.Writer, "    --devices:      part %s of the split\n", strings.Join(places[i], " and "))
				}
			}
			return nil
		},
	}
}

func printDevice(w io.Writer, d vk.DeviceInfo, chosen bool) {
	mark := " "
	if chosen {
		mark = "*"
	}
	fmt.Fprintf(w, "%s %d: %s (%s)\n", mark, d.Index, d.Name, d.Type)
	fmt.Fprintf(w, "    driver:         %s %s, Vulkan %s, vendor 0x%04x device 0x%04x\n", d.Driver, d.DriverInfo, d.APIVersion, d.VendorID, d.DeviceID)
	for i, h := range d.Heaps {
		kind := "host"
		if h.DeviceLocal {
			kind = "device-local"
		}
		budget := ""
		if h.Budget > 0 {
			budget = fmt.Sprintf(", budget %s, used %s", bytesize.Format(h.Budget), bytesize.Format(h.Usage))
		}
		fmt.Fprintf(w, "    heap %d:         %s %s%s\n", i, bytesize.Format(h.Size), kind, budget)
	}
	fmt.Fprintf(w, "    storage range:  %s (max allocation %s)\n", bytesize.Format(d.MaxStorageBufferRange), bytesize.Format(d.MaxAllocationSize))
	fmt.Fprintf(w, "    compute:        subgroup %d, shared memory %s, %d invocations per workgroup\n", d.SubgroupSize, bytesize.Format(uint64(d.MaxSharedMemory)), d.MaxWorkgroupInvocations)
	have, lack := d.Features()
	fmt.Fprintf(w, "    features:       %s\n", strings.Join(have, ", "))
	if len(lack) > 0 {
		fmt.Fprintf(w, "    missing:        %s\n", strings.Join(lack, ", "))
	}
}
