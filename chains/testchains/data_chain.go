package testchains

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"

	"nectar/chains"
)

// SourceTask reads an object of the store that no task produced and writes its size and
// SHA-256: "<bytes> <sha256>\n".
type SourceTask struct {
	// The object's path in the store.
	Path string `param:"path" required:"true"`
}

func (t SourceTask) Run(ctx *chains.Context) error {
	rc, err := ctx.Source(t.Path)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(ctx.Out(), "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	return err
}

// ArtifactsTask writes count artifacts, parts/<i>.txt, and publishes the first at
// reports/testchains/<publish>/first.txt when publish is given; with fail it fails after
// writing them (so none may be committed); with pictures it also writes two PNGs
// (plots/ATL.png, plots/ORD.png) and an HTML report, for the web UI's gallery.
type ArtifactsTask struct {
	Count    int    `param:"count" default:"3"`
	Publish  string `param:"publish"`
	Fail     bool   `param:"fail"`
	Pictures bool   `param:"pictures"`
}

func (t ArtifactsTask) Run(ctx *chains.Context) error {
	for i := range t.Count {
		w, err := ctx.Artifact(fmt.Sprintf("parts/%d.txt", i))
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "part %d of %d\n", i, t.Count)
		if i%2 == 0 { // the odd ones are left open: Run's end closes them
			if err := w.Close(); err != nil {
				return err
			}
		}
	}
	if t.Publish != "" {
		if err := ctx.Publish("parts/0.txt", "reports/testchains/"+t.Publish+"/first.txt"); err != nil {
			return err
		}
	}
	if t.Pictures {
		for i, name := range []string{"ATL", "ORD"} {
			img := image.NewRGBA(image.Rect(0, 0, 120, 80))
			draw.Draw(img, img.Bounds(), &image.Uniform{color.RGBA{R: uint8(80 * i), G: 120, B: 200, A: 255}}, image.Point{}, draw.Src)
			w, err := ctx.Artifact("plots/" + name + ".png")
			if err != nil {
				return err
			}
			if err := png.Encode(w, img); err != nil {
				return err
			}
		}
		w, err := ctx.Artifact("report.html")
		if err != nil {
			return err
		}
		fmt.Fprint(w, `<!doctype html><title>report</title><h1 id="r">The report</h1><script>parent.document.title = "escaped"</script>`)
	}
	if t.Fail {
		return errors.New("failing after writing the artifacts")
	}
	_, err := fmt.Fprintf(ctx.Out(), "%d artifacts\n", t.Count)
	return err
}

// SecretTask reads the connection "testdb" and, carelessly, logs and prints it; with fail it
// returns an error quoting it. The server must keep the value out of every log, error and record.
type SecretTask struct {
	Fail bool `param:"fail"`
}

func (SecretTask) Connections() []string { return []string{"testdb"} }

func (t SecretTask) Run(ctx *chains.Context) error {
	dsn, err := ctx.Connection("testdb")
	if err != nil {
		return err
	}
	ctx.Status("connecting to " + dsn)
	ctx.Log().Info("connecting", "dsn", dsn)
	fmt.Println("printing the dsn:", dsn)
	if t.Fail {
		return fmt.Errorf("cannot connect to %s", dsn)
	}
	sum := sha256.Sum256([]byte(dsn))
	_, err = fmt.Fprintf(ctx.Out(), "connected with a %d-byte dsn %s\n", len(dsn), hex.EncodeToString(sum[:4]))
	return err
}
