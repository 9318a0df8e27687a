# The sources of the libraries that read untrusted files, relative to the repository root, kept
# in this one place: each folder's CMakeLists.txt builds its library from its list, and the fuzz
# build (fuzz/CMakeLists.txt, clang + sanitizers) builds instrumented copies of the same
# libraries from the same lists, so a source added to a library is fuzzed with it.
set(REID_BASE_SOURCES base/cpus.cc base/file_util.cc base/init.cc)  # + the generated build_info.cc
set(REID_PROTO_SOURCES proto/config.cc proto/reflection.cc)  # + the generated *.pb.cc
set(REID_PROTO_FILES proto/reid_config.proto proto/checkpoint.proto proto/history.proto)
set(REID_DATA_SOURCES data/dataset.cc data/image_list.cc data/jpeg.cc data/loader.cc
  data/options.cc data/png.cc data/sampler.cc data/synth.cc data/transforms.cc)
set(REID_FORMATS_SOURCES formats/features_io.cc formats/npy.cc formats/torch_save_reader.cc
  formats/torch_save_writer.cc)
set(REID_TOKENIZER_SOURCES trainer/model/html_unescape.cc trainer/model/tokenizer.cc)
set(REID_CHECKPOINT_SOURCES trainer/checkpoint.cc)
set(REID_REPORT_SOURCES monitoring/report/history_reader.cc monitoring/report/report.cc
  monitoring/report/report_html.cc monitoring/report/svg_plot.cc)
set(REID_LAUNCHER_SOURCES launcher/launch_args.cc launcher/plan.cc launcher/supervisor.cc)

# reid_sources(VAR LIST): VAR = the list's files as absolute paths under `root` (default: this
# project's source root).
function(reid_sources var list)
  set(root ${CMAKE_SOURCE_DIR})
  if(ARGC GREATER 2)
    set(root ${ARGV2})
  endif()
  set(out)
  foreach(f ${${list}})
    list(APPEND out ${root}/${f})
  endforeach()
  set(${var} ${out} PARENT_SCOPE)
endfunction()
