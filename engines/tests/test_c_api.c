/* The C API compiles as C99 and works from C: open the fixture bundle, run, read outputs, choose a
 * graph, and get an error string (not a crash) for a missing bundle or graph.   test_c_api FIXTURES */
#include <stdio.h>
#include <string.h>

#include "xpr/xpr.h"

int main(int argc, char** argv) {
  char path[4096];
  xpr_engine* e = NULL;
  xpr_options o;
  int fails = 0;
  if (argc != 2) return 2;
  xpr_options_init(&o);
  o.device = XPR_DEVICE_CPU;
  o.intra_op_threads = 1;

  if (xpr_create("/nonexistent/bundle", &o, &e) != XPR_ERR_IO || e != NULL ||
      strstr(xpr_last_error(), "/nonexistent/bundle/manifest.json") == NULL) {
    fprintf(stderr, "missing bundle: wrong status or message '%s'\n", xpr_last_error());
    ++fails;
  }
  snprintf(path, sizeof path, "%s/bundle", argv[1]);
  if (xpr_create(path, &o, &e) != XPR_OK) {
    fprintf(stderr, "xpr_create: %s\n", xpr_last_error());
    return 1;
  }
  {
    int32_t rows = 0, cols = 0, r, c;
    static uint16_t px[448 * 224];
    xpr_image im;
    float prob = -1.f, logits[2];
    xpr_input_size(e, &rows, &cols);
    for (r = 0; r < rows; ++r)
      for (c = 0; c < cols; ++c) px[r * cols + c] = (uint16_t)(c < cols / 2 && r > 20 && r < rows - 20 ? 3000 : 50);
    xpr_image_init(&im);
    im.pixels = px;
    im.rows = rows;
    im.cols = cols;
    im.bits_stored = 12;
    im.name = "synthetic-c";
    if (xpr_run(e, &im, &im) != XPR_OK) {
      fprintf(stderr, "xpr_run: %s\n", xpr_last_error());
      ++fails;
    } else if (xpr_get_prob(e, &prob) != XPR_OK || prob < 0.f || prob > 1.f ||
               xpr_get_logits(e, logits, 2) != XPR_OK || xpr_num_selections(e) != 2) {
      fprintf(stderr, "outputs: prob %g, %d selections\n", prob, xpr_num_selections(e));
      ++fails;
    }
    printf("C API: backend %s, prob %.6f\n", xpr_backend_name(e), prob);
  }
  { /* operating points: the manifest's, chosen by name; an unknown name leaves the current one */
    const char* name = NULL;
    double thr = -1.0;
    int32_t n = xpr_num_operating_points(e), i, malignant = -1;
    float prob = 0.f;
    if (n != 3 || xpr_get_operating_point(e, 0, &name, &thr) != XPR_OK || strcmp(name, "sens=0.90") != 0 ||
        thr != 0.25 || xpr_get_operating_point(e, 3, &name, &thr) != XPR_ERR_ARGUMENT) {
      fprintf(stderr, "operating points: %d, first '%s' %g (%s)\n", (int)n, name ? name : "", thr, xpr_last_error());
      ++fails;
    }
    if (xpr_operating_point(e, &name, &thr) != XPR_OK || strcmp(name, "youden-validation") != 0 || thr != 0.5) {
      fprintf(stderr, "default operating point: '%s' %g\n", name ? name : "", thr);
      ++fails;
    }
    if (xpr_set_operating_point(e, "spec=0.90") != XPR_OK || xpr_operating_point(e, &name, &thr) != XPR_OK ||
        strcmp(name, "spec=0.90") != 0 || thr != 0.75) {
      fprintf(stderr, "xpr_set_operating_point(spec=0.90): '%s' %g (%s)\n", name ? name : "", thr, xpr_last_error());
      ++fails;
    }
    if (xpr_set_operating_point(e, "sens=0.42") != XPR_ERR_ARGUMENT ||
        strstr(xpr_last_error(), "no operating point 'sens=0.42' (has sens=0.90, spec=0.90, youden)") == NULL ||
        xpr_operating_point(e, &name, &thr) != XPR_OK || strcmp(name, "spec=0.90") != 0) {
      fprintf(stderr, "unknown operating point: '%s'\n", xpr_last_error());
      ++fails;
    }
    for (i = 0; i < 2; ++i) { /* the decision follows the point: prob >= threshold */
      if (xpr_set_operating_point(e, i ? "sens=0.90" : NULL) != XPR_OK || xpr_operating_point(e, NULL, &thr) != XPR_OK ||
          xpr_get_prob(e, &prob) != XPR_OK || xpr_get_decision(e, &malignant) != XPR_OK ||
          malignant != ((double)prob >= thr ? 1 : 0)) {
        fprintf(stderr, "xpr_get_decision: %d at %g, prob %g (%s)\n", (int)malignant, thr, prob, xpr_last_error());
        ++fails;
      }
    }
  }
  xpr_destroy(e);
  { /* xpr_options.graph: a precision from the manifest's `graphs` (the fixture has fp32 only) */
    xpr_engine* g = NULL;
    o.graph = "fp32";
    if (xpr_create(path, &o, &g) != XPR_OK || strcmp(xpr_model_file(g), "model.onnx") != 0 ||
        strncmp(xpr_backend_name(g), "onnxruntime", 11) != 0) {
      fprintf(stderr, "graph fp32: '%s' (%s)\n", g ? xpr_model_file(g) : "", xpr_last_error());
      ++fails;
    }
    xpr_destroy(g);
    o.graph = "int8";
    if (xpr_create(path, &o, &g) != XPR_ERR_UNSUPPORTED || g != NULL ||
        strstr(xpr_last_error(), "the bundle has no 'int8' graph (manifest 'graphs')") == NULL) {
      fprintf(stderr, "graph int8 (absent): '%s'\n", xpr_last_error());
      ++fails;
    }
    o.graph = "fp32";
    o.backend = XPR_BACKEND_TENSORRT;
    if (xpr_create(path, &o, &g) != XPR_ERR_ARGUMENT || g != NULL ||
        strstr(xpr_last_error(), "run by ONNX Runtime, not by the TensorRT backend") == NULL) {
      fprintf(stderr, "graph with TensorRT: '%s'\n", xpr_last_error());
      ++fails;
    }
  }
  return fails;
}
